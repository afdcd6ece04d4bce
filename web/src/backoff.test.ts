import { describe, expect, it } from 'vitest';
import { Backoff } from './backoff';

describe('Backoff', () => {
  const options = { initialMs: 500, maxMs: 10_000, factor: 2, jitter: 0.5 };

  it('doubles the delay after every failed attempt', () => {
    const b = new Backoff(options, () => 0);
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([500, 1000, 2000, 4000]);
  });

  it('never exceeds the ceiling', () => {
    const b = new Backoff(options, () => 0);
    const delays = Array.from({ length: 12 }, () => b.next());
    expect(Math.max(...delays)).toBe(10_000);
    expect(delays.slice(-3)).toEqual([10_000, 10_000, 10_000]);
  });

  it('randomises each delay within the jitter share', () => {
    const low = new Backoff(options, () => 0.999_999);
    const high = new Backoff(options, () => 0);
    expect(low.next()).toBe(250);
    expect(high.next()).toBe(500);
  });

  it('starts small again after a reset', () => {
    const b = new Backoff(options, () => 0);
    b.next();
    b.next();
    b.next();
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(500);
  });
});
