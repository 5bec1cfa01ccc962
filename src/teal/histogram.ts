/**
 * Log-spaced histograms of activation magnitudes: TEAL thresholds are magnitude quantiles, and a histogram
 * gives any quantile of millions of values without keeping them (about 0.7% relative resolution).
 * @module
 */

/** Bins per octave (powers of two). */
const PER_OCTAVE = 64;
/** Smallest and largest magnitude with a bin of its own (2^-32 .. 2^32). */
const MIN_EXP = -32;
const MAX_EXP = 32;
const BINS = (MAX_EXP - MIN_EXP) * PER_OCTAVE;

/** Counts of |x| per log-spaced bin, plus exact zeros (and values below 2^-32) in bin -1. */
export class MagnitudeHistogram {
  /** counts[b]: values in [edge(b), edge(b+1)). */
  readonly counts: Float64Array = new Float64Array(BINS);
  /** Values at or below the first edge (zeros). */
  zeros = 0;
  /** All values counted. */
  total = 0;

  /** Lower edge of bin b. */
  static edge(b: number): number {
    return 2 ** (MIN_EXP + b / PER_OCTAVE);
  }

  /** Adds |v * scale| for every value (scale optional, per channel: v[r * width + k] uses scale[k]). */
  add(v: Float32Array, width: number, scale?: Float32Array): void {
    const c = this.counts;
    for (let i = 0; i < v.length; i++) {
      const a = Math.abs(scale ? v[i] * scale[i % width] : v[i]);
      this.total++;
      if (!(a > 2 ** MIN_EXP)) {
        this.zeros++;
        continue;
      }
      let b = Math.floor((Math.log2(a) - MIN_EXP) * PER_OCTAVE);
      if (b >= BINS) b = BINS - 1;
      c[b]++;
    }
  }

  /**
   * The threshold t such that about `frac` of the values have magnitude <= t (so dropping |x| <= t reaches
   * sparsity frac): log-linear interpolation inside the bin that holds the quantile.
   */
  quantile(frac: number): number {
    if (frac <= 0 || this.total === 0) return 0;
    let need = frac * this.total - this.zeros;
    if (need <= 0) return 0;
    for (let b = 0; b < BINS; b++) {
      const n = this.counts[b];
      if (need <= n) {
        const f = need / n;
        return 2 ** (MIN_EXP + (b + f) / PER_OCTAVE);
      }
      need -= n;
    }
    return 2 ** MAX_EXP;
  }

  /** Fraction of values with magnitude <= t (the sparsity threshold t gives). */
  fractionBelow(t: number): number {
    if (this.total === 0) return 0;
    if (!(t > 2 ** MIN_EXP)) return this.zeros / this.total;
    const pos = (Math.log2(t) - MIN_EXP) * PER_OCTAVE;
    const whole = Math.min(BINS, Math.floor(pos));
    let n = this.zeros;
    for (let b = 0; b < whole; b++) n += this.counts[b];
    if (whole < BINS) n += this.counts[whole] * (pos - whole);
    return n / this.total;
  }
}
