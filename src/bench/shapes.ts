/**
 * Model shapes for benchmarks with random weights: the real architectures' configs, no checkpoint needed.
 * @module
 */
import type { ModelConfig } from "../model/config.ts";

const base = {
  architecture: "llama" as const,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
  qkvBias: false,
  slidingWindow: null,
  bosTokenId: 1,
  eosTokenIds: [2],
  ropeScaling: null,
};

/** Benchmark shapes by name. */
export const SHAPES: Record<string, ModelConfig> = {
  "llama-3-8b": {
    ...base,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    vocabSize: 128256,
    maxPositionEmbeddings: 8192,
    ropeTheta: 500000,
    bosTokenId: 128000,
    eosTokenIds: [128001],
  },
  "llama-2-7b": {
    ...base,
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    headDim: 128,
    vocabSize: 32000,
    maxPositionEmbeddings: 4096,
    ropeTheta: 10000,
  },
  "mistral-7b": {
    ...base,
    architecture: "mistral",
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    vocabSize: 32768,
    maxPositionEmbeddings: 32768,
    ropeTheta: 1000000,
  },
  tiny: {
    ...base,
    hiddenSize: 384,
    intermediateSize: 1024,
    numLayers: 8,
    numHeads: 6,
    numKvHeads: 2,
    headDim: 64,
    vocabSize: 4096,
    maxPositionEmbeddings: 1024,
    ropeTheta: 10000,
    bosTokenId: 0,
    eosTokenIds: [1],
  },
};
