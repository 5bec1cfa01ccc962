/**
 * The consumer side of a generation: chunks pushed by the producer (decode loop or worker messages) are read
 * by one async iterator, which ends when the generation's result settles.
 * @module
 */
import type { GenerateChunk, GenerateResult, Generation } from "./types.ts";

/** Chunks between a producer and one consumer. */
export class ChunkQueue {
  #chunks: GenerateChunk[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  /** Queues a chunk for the consumer. */
  push(chunk: GenerateChunk): void {
    this.#chunks.push(chunk);
    this.#wake?.();
  }

  /** Marks the end of production (the result has settled). */
  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  /** True once production has ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * The generation handed to the caller: iterating yields the queued chunks, then surfaces `result`'s error if
   * it failed; `onEarlyExit` runs when the consumer leaves before the end (break, return, throw).
   */
  generation(result: Promise<GenerateResult>, onEarlyExit: () => void): Generation {
    const iterate = async function* (this: ChunkQueue): AsyncGenerator<GenerateChunk> {
      try {
        while (true) {
          if (this.#chunks.length > 0) {
            yield this.#chunks.shift()!;
            continue;
          }
          if (this.#ended) break;
          await new Promise<void>((r) => (this.#wake = r));
          this.#wake = null;
        }
        await result;
      } finally {
        if (!this.#ended) onEarlyExit();
      }
    }.bind(this);
    return { result, [Symbol.asyncIterator]: iterate };
  }
}
