import {
  checkCaps,
  checkCount,
  checkTenantId,
  compareRows,
  DAY_MS,
  DEFAULT_MAX_SLOT_AGE_MS,
  emptyCounters,
  nextUtcMidnight,
  nextUtcMonth,
  overruns,
  parseUtcDay,
  QUOTA_GRACE_MS,
  quotaWindows,
  reservation,
  roundSeconds,
  ticketWindows,
  usageDays,
  usageIncrements,
  utcDay,
  utcMonth,
  type AccountingStore,
  type AccountingStoreOptions,
  type QuotaCaps,
  type QuotaState,
  type QuotaTicket,
  type Reservation,
  type SlotState,
  type UsageCounters,
  type UsageRow,
} from './accounting-store.js';

interface Counter {
  used: number;
  /** When the counter may be forgotten: its window's end plus the grace period. */
  expiresAt: number;
}

interface Slot {
  takenAt: number;
  touchedAt: number;
}

/**
 * In-process accounting for a single replica. JavaScript runs each method to completion before
 * the next, so check-and-charge is atomic without locks. Memory stays bounded without timers:
 * quota counters are dropped once a day after their window (and grace) ends, usage days past the
 * retention as newer usage arrives, and slots past `maxSlotAgeMs` whenever slots are taken or swept.
 */
export class MemoryAccountingStore implements AccountingStore {
  readonly kind = 'memory' as const;
  private readonly counters = new Map<string, Counter>();
  private readonly slots = new Map<string, Map<string, Slot>>();
  private readonly days = new Map<string, Map<string, UsageCounters>>();
  private readonly maxSlotAgeMs: number;
  private readonly retentionMs: number;
  private lastCounterSweepDay = '';
  private latestUsageDay = '';

  constructor(options: AccountingStoreOptions) {
    checkCount('retentionDays', options.retentionDays);
    this.retentionMs = options.retentionDays * DAY_MS;
    this.maxSlotAgeMs = options.maxSlotAgeMs ?? DEFAULT_MAX_SLOT_AGE_MS;
    if (!Number.isSafeInteger(this.maxSlotAgeMs) || this.maxSlotAgeMs <= 0) throw new RangeError('maxSlotAgeMs must be a positive integer');
  }

  async reserveImages(tenantId: string, images: number, caps: QuotaCaps, now: number): Promise<Reservation> {
    checkTenantId(tenantId);
    checkCount('images', images);
    checkCaps(caps);
    this.sweepCounters(now);
    const dayKey = `${tenantId}:d:${utcDay(now)}`;
    const monthKey = `${tenantId}:m:${utcMonth(now)}`;
    let usedDay = this.used(dayKey);
    let usedMonth = this.used(monthKey);
    const over = overruns(caps, images, usedDay, usedMonth);
    if (!over.day && !over.month && images > 0) {
      if (caps.imagesPerDay !== undefined) usedDay = this.charge(dayKey, images, nextUtcMidnight(now));
      if (caps.imagesPerMonth !== undefined) usedMonth = this.charge(monthKey, images, nextUtcMonth(now));
    }
    return reservation(tenantId, images, caps, now, { usedDay, usedMonth, over });
  }

  async refundImages(ticket: QuotaTicket): Promise<void> {
    checkCount('images', ticket.images);
    for (const window of ticketWindows(ticket)) {
      const counter = this.counters.get(`${ticket.tenantId}:${window === 'day' ? `d:${ticket.day}` : `m:${ticket.month}`}`);
      if (counter) counter.used = Math.max(0, counter.used - ticket.images);
    }
  }

  async quotaState(tenantId: string, caps: QuotaCaps, now: number): Promise<QuotaState[]> {
    checkTenantId(tenantId);
    checkCaps(caps);
    this.sweepCounters(now);
    return quotaWindows(caps, this.used(`${tenantId}:d:${utcDay(now)}`), this.used(`${tenantId}:m:${utcMonth(now)}`), now);
  }

  async acquireSlot(tenantId: string, slotId: string, max: number, now: number): Promise<{ ok: boolean; state: SlotState }> {
    checkTenantId(tenantId);
    checkCount('max', max);
    const held = this.slots.get(tenantId) ?? new Map<string, Slot>();
    this.dropAged(held, now);
    const existing = held.get(slotId);
    let ok = false;
    if (existing) {
      existing.touchedAt = now;
      ok = true;
    } else if (held.size < max) {
      held.set(slotId, { takenAt: now, touchedAt: now });
      ok = true;
    }
    this.keepTenant(tenantId, held);
    return { ok, state: { limit: max, inUse: held.size } };
  }

  async renameSlot(tenantId: string, fromId: string, toId: string, now: number): Promise<void> {
    const held = this.slots.get(tenantId);
    const slot = held?.get(fromId);
    if (!held || !slot) return;
    held.delete(fromId);
    held.set(toId, { takenAt: slot.takenAt, touchedAt: now });
  }

  async releaseSlot(tenantId: string, slotId: string): Promise<boolean> {
    const held = this.slots.get(tenantId);
    if (!held?.delete(slotId)) return false;
    this.keepTenant(tenantId, held);
    return true;
  }

  async staleSlots(olderThanMs: number, now: number, limit: number): Promise<Array<{ tenantId: string; slotId: string }>> {
    checkCount('limit', limit);
    const cutoff = now - olderThanMs;
    const candidates: Array<{ tenantId: string; slotId: string; slot: Slot }> = [];
    for (const [tenantId, held] of this.slots) {
      this.dropAged(held, now);
      this.keepTenant(tenantId, held);
      for (const [slotId, slot] of held) if (slot.touchedAt < cutoff) candidates.push({ tenantId, slotId, slot });
    }
    candidates.sort((a, b) => a.slot.touchedAt - b.slot.touchedAt);
    return candidates.slice(0, limit).map(({ tenantId, slotId, slot }) => {
      slot.touchedAt = now;
      return { tenantId, slotId };
    });
  }

  async slotsInUse(tenantId: string): Promise<number> {
    return this.slots.get(tenantId)?.size ?? 0;
  }

  async addUsage(tenantId: string, at: number, delta: Partial<UsageCounters>): Promise<void> {
    checkTenantId(tenantId);
    const { counts, seconds } = usageIncrements(delta);
    if (counts.length === 0 && seconds === 0) return;
    const day = utcDay(at);
    const tenants = this.days.get(day) ?? new Map<string, UsageCounters>();
    this.days.set(day, tenants);
    const row = tenants.get(tenantId) ?? emptyCounters();
    tenants.set(tenantId, row);
    for (const [field, value] of counts) row[field] += value;
    row.inferenceSeconds += seconds;
    if (day > this.latestUsageDay) {
      this.latestUsageDay = day;
      this.sweepDays(parseUtcDay(day));
    }
  }

  async usage(tenantId: string | undefined, fromDay: string, toDay: string): Promise<UsageRow[]> {
    const rows: UsageRow[] = [];
    for (const day of usageDays(fromDay, toDay)) {
      const tenants = this.days.get(day);
      if (!tenants) continue;
      for (const [id, counters] of tenants) {
        if (tenantId === undefined || id === tenantId) rows.push({ tenantId: id, day, ...counters, inferenceSeconds: roundSeconds(counters.inferenceSeconds) });
      }
    }
    return rows.sort(compareRows);
  }

  async close(): Promise<void> {
    this.counters.clear();
    this.slots.clear();
    this.days.clear();
  }

  /** What the store holds, to show that it stays bounded. */
  get sizes(): { quotaCounters: number; slotTenants: number; usageDays: number } {
    return { quotaCounters: this.counters.size, slotTenants: this.slots.size, usageDays: this.days.size };
  }

  private used(key: string): number {
    return this.counters.get(key)?.used ?? 0;
  }

  private charge(key: string, images: number, windowEnd: number): number {
    const counter = this.counters.get(key) ?? { used: 0, expiresAt: windowEnd + QUOTA_GRACE_MS };
    counter.used += images;
    this.counters.set(key, counter);
    return counter.used;
  }

  /** Once per UTC day: forgets counters whose window and grace have passed. */
  private sweepCounters(now: number): void {
    const today = utcDay(now);
    if (today === this.lastCounterSweepDay) return;
    this.lastCounterSweepDay = today;
    for (const [key, counter] of this.counters) if (counter.expiresAt <= now) this.counters.delete(key);
  }

  /**
   * Forgets days whose retention has run out by `now`, the start of the newest day with usage:
   * retention ends at a UTC midnight, so sweeping once per new day is exact.
   */
  private sweepDays(now: number): void {
    for (const day of this.days.keys()) if (parseUtcDay(day) + DAY_MS + this.retentionMs <= now) this.days.delete(day);
  }

  private dropAged(held: Map<string, Slot>, now: number): void {
    const cutoff = now - this.maxSlotAgeMs;
    for (const [slotId, slot] of held) if (slot.takenAt < cutoff) held.delete(slotId);
  }

  /** Keeps a tenant's slot map only while it holds something. */
  private keepTenant(tenantId: string, held: Map<string, Slot>): void {
    if (held.size > 0) this.slots.set(tenantId, held);
    else this.slots.delete(tenantId);
  }
}
