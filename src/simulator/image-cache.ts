/**
 * Rendered images, kept briefly. The result endpoint renders every image to report its
 * `file_size`, and the client downloads the same bytes right after, so a small LRU saves rendering
 * each 1024px image twice. Bounded by entries and bytes: a long demo run must not grow memory.
 */
export class ImageCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(
    private readonly maxEntries = 64,
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  get(key: string): Buffer | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      // Map keeps insertion order: re-inserting marks the entry most recently used.
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  getOrRender(key: string, render: () => Buffer): Buffer {
    const hit = this.get(key);
    if (hit) return hit;
    const bytes = render();
    this.entries.set(key, bytes);
    this.bytes += bytes.length;
    for (const [oldest, buffer] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      if (oldest === key) break; // never evict what we are about to hand out
      this.entries.delete(oldest);
      this.bytes -= buffer.length;
    }
    return bytes;
  }
}
