/**
 * A clock tests can move by hand: pass `clock.now` as the simulator's `now` option and call
 * `advance` instead of sleeping, so queue timing is exact and tests stay fast.
 */
export interface ManualClock {
  now: () => number;
  advance(ms: number): void;
  set(ms: number): void;
}

export function manualClock(start = Date.UTC(2025, 0, 1)): ManualClock {
  let current = start;
  return {
    now: () => current,
    advance: (ms) => {
      current += ms;
    },
    set: (ms) => {
      current = ms;
    },
  };
}
