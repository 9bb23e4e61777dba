// Preload (`node --import ./test/support/clock-ahead.mjs …`): this process's wall clock runs
// COWCHAIN_CLOCK_SKEW_MS (default 40 s) ahead — Date.now() and new Date() — as on a host whose
// clock is off. Monotonic time (performance.now) is untouched, as it is on such a host.
const realNow = Date.now;
const skew = Number(process.env.COWCHAIN_CLOCK_SKEW_MS ?? 40_000);
const RealDate = Date;
class SkewedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(realNow() + skew);
    else super(...args);
  }
  static now() {
    return realNow() + skew;
  }
}
globalThis.Date = SkewedDate;
