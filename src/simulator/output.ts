import { randomInt } from 'node:crypto';
import { IMAGE_SIDE_DEFAULT, type ModelInput } from '../schemas/model-input.js';
import { CONTENT_TYPES, MAX_RENDER_SIDE, renderImage, type ImageFormat } from './images.js';
import type { ImageCache } from './image-cache.js';

/**
 * What the simulated model produces for an accepted input. The spec is fixed at submit time
 * (including a random seed when none was given) so every read of the result, and every download
 * of its files, sees the same images.
 */

export interface OutputSpec {
  prompt: string;
  numImages: number;
  format: ImageFormat;
  width: number;
  height: number;
  seed: number;
  steps: number;
  syncMode: boolean;
}

const PRESETS: Record<string, [number, number]> = {
  square_hd: [1024, 1024],
  square: [512, 512],
  portrait_4_3: [768, 1024],
  portrait_16_9: [576, 1024],
  landscape_4_3: [1024, 768],
  landscape_16_9: [1024, 576],
};

// image-to-image lists no default size (the real model follows the input image, which the
// simulator never downloads); 1024x768 stands in for it.
const DEFAULT_SIZE: [number, number] = [1024, 768];

export function outputSpec(input: ModelInput): OutputSpec {
  const size = input.image_size;
  const [width, height] =
    size === undefined || size === null ? DEFAULT_SIZE : typeof size === 'string' ? (PRESETS[size] ?? DEFAULT_SIZE) : [size.width ?? IMAGE_SIDE_DEFAULT, size.height ?? IMAGE_SIDE_DEFAULT];
  return {
    prompt: input.prompt,
    numImages: input.num_images ?? 1,
    format: input.output_format ?? 'jpeg',
    // Explicit sizes go up to 14142 px; the simulator caps what it renders (and reports the size
    // it really rendered, so width/height always describe the file).
    width: Math.min(width, MAX_RENDER_SIDE),
    height: Math.min(height, MAX_RENDER_SIDE),
    seed: input.seed ?? randomInt(0, 2 ** 31),
    steps: input.num_inference_steps ?? 28,
    syncMode: input.sync_mode ?? false,
  };
}

export const fileName = (index: number, format: ImageFormat) => `${index}.${format}`;

/** Bytes of image `index` of a job, rendered at most once while they stay in the cache. */
export function imageBytes(cache: ImageCache, jobId: string, spec: OutputSpec, index: number): Buffer {
  return cache.getOrRender(`${jobId}/${fileName(index, spec.format)}`, () =>
    renderImage({ width: spec.width, height: spec.height, format: spec.format, seed: spec.seed + index }),
  );
}

export interface ModelOutputBody {
  images: {
    url: string;
    width: number;
    height: number;
    content_type: string;
    file_name: string;
    file_size: number;
  }[];
  timings: { inference: number };
  seed: number;
  has_nsfw_concepts: boolean[];
  prompt: string;
}

/**
 * The model's result. `origin` must be the simulator's real address, never the configured
 * urlBase: the URLs must really load. sync_mode inlines the files as data URIs, as fal does.
 */
export function modelOutput(
  cache: ImageCache,
  jobId: string,
  spec: OutputSpec,
  origin: string,
  inferenceSeconds: number,
): ModelOutputBody {
  const contentType = CONTENT_TYPES[spec.format];
  const images = Array.from({ length: spec.numImages }, (_, index) => {
    const bytes = imageBytes(cache, jobId, spec, index);
    const name = fileName(index, spec.format);
    return {
      url: spec.syncMode
        ? `data:${contentType};base64,${bytes.toString('base64')}`
        : `${origin}/files/${jobId}/${name}`,
      width: spec.width,
      height: spec.height,
      content_type: contentType,
      file_name: name,
      file_size: bytes.length,
    };
  });
  return {
    images,
    timings: { inference: inferenceSeconds },
    seed: spec.seed,
    has_nsfw_concepts: images.map(() => false),
    prompt: spec.prompt,
  };
}
