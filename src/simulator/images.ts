import * as zlib from 'node:zlib';
import jpeg from 'jpeg-js';

/**
 * Real image bytes for the simulated model's output. A client (or a browser behind the gateway)
 * must be able to download and display what the result points at, so these are genuine PNG and
 * JPEG files, not placeholders. The picture is a smooth four-corner gradient whose colours come
 * from the seed: cheap to compute, deterministic, and visibly different between seeds.
 */

export type ImageFormat = 'png' | 'jpeg';

export interface RenderOptions {
  width: number;
  height: number;
  format: ImageFormat;
  seed: number;
}

/** Largest side the simulator renders; rendering is synchronous CPU work on the event loop. */
export const MAX_RENDER_SIDE = 2048;

export const CONTENT_TYPES: Record<ImageFormat, string> = {
  png: 'image/png',
  jpeg: 'image/jpeg',
};

export function renderImage({ width, height, format, seed }: RenderOptions): Buffer {
  for (const [name, side] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(side) || side < 1 || side > MAX_RENDER_SIDE) {
      throw new RangeError(`${name} must be an integer between 1 and ${MAX_RENDER_SIDE}, got ${side}`);
    }
  }
  const corners = cornerColours(seed);
  if (format === 'png') {
    // PNG scanlines: one filter-type byte (0 = none) then RGB triples.
    const stride = 1 + width * 3;
    const raw = Buffer.alloc(stride * height);
    paint(width, height, corners, (x, y) => y * stride + 1 + x * 3, raw);
    return encodePng(width, height, raw);
  }
  const rgba = Buffer.alloc(width * height * 4, 255); // alpha stays 255
  paint(width, height, corners, (x, y) => (y * width + x) * 4, rgba);
  return jpeg.encode({ data: rgba, width, height }, 85).data;
}

type Rgb = [number, number, number];

/** mulberry32: a tiny seeded PRNG, good enough to pick colours. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function cornerColours(seed: number): [Rgb, Rgb, Rgb, Rgb] {
  // Seeds can exceed 32 bits; fold the high part in so nearby large seeds still differ.
  const random = prng((seed | 0) ^ Math.floor(seed / 4294967296));
  const colour = (): Rgb => [random() * 255, random() * 255, random() * 255];
  return [colour(), colour(), colour(), colour()];
}

/** Bilinear blend of the four corner colours, written as RGB at `offset(x, y)`. */
function paint(
  width: number,
  height: number,
  [tl, tr, bl, br]: [Rgb, Rgb, Rgb, Rgb],
  offset: (x: number, y: number) => number,
  out: Buffer,
): void {
  const fx = width > 1 ? 1 / (width - 1) : 0;
  const fy = height > 1 ? 1 / (height - 1) : 0;
  for (let y = 0; y < height; y++) {
    const v = y * fy;
    const left = [0, 1, 2].map((c) => tl[c]! + (bl[c]! - tl[c]!) * v);
    const right = [0, 1, 2].map((c) => tr[c]! + (br[c]! - tr[c]!) * v);
    for (let x = 0; x < width; x++) {
      const u = x * fx;
      const at = offset(x, y);
      for (let c = 0; c < 3; c++) {
        out[at + c] = Math.round(left[c]! + (right[c]! - left[c]!) * u);
      }
    }
  }
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function encodePng(width: number, height: number, raw: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour RGB
  // compression, filter method and interlace stay 0
  return Buffer.concat([
    PNG_SIGNATURE,
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  // The CRC covers the chunk type and data, not the length.
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

// zlib.crc32 exists from Node 20.15 on; keep a table fallback so an older runtime still works.
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;
let crcTable: Uint32Array | undefined;

function crc32(data: Buffer): number {
  if (nativeCrc32) return nativeCrc32(data) >>> 0;
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let crc = 0xffffffff;
  for (const byte of data) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
