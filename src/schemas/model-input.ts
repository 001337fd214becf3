import { z } from 'zod';
import { SEED_REQUEST } from '../model.js';
import { ACCEPTED_IMAGE_TYPES, SNIFF_BYTES, sniffImageType } from './image-type.js';

/**
 * Input of `fal-ai/flux-lora/image-to-image`, strictly. Defaults are documented with `.meta`
 * rather than applied with `.default()`: the gateway forwards exactly what the caller sent
 * and lets the model apply its own defaults.
 */

const range = (field: string, min: number, max: number, integer = false) => {
  const kind = integer ? 'an integer' : 'a number';
  const message = `${field} must be ${kind} between ${min} and ${max}`;
  const base = integer ? z.int({ error: message }) : z.number({ error: message });
  return base.min(min, { error: message }).max(max, { error: message });
};

/** Media types are case-insensitive, and `image/jpg` is a common label for JPEG; the bytes are checked anyway. */
const DATA_URI = /^data:image\/(png|jpe?g|webp|gif|avif);base64,([A-Za-z0-9+/]+={0,2})$/i;
/** A Hugging Face repository (owner/name, optionally a file path in it), not a URL of any scheme. */
const HF_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;

/** A backslash or a control character (including tab, CR, LF and DEL). */
function ambiguous(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code === 0x7f || code === 0x5c) return true;
  }
  return false;
}

let lastValue: string | undefined;
let lastUrl: URL | undefined;

/**
 * `value` as an http(s) URL with a host, or undefined. A submit's image URL is read twice in a
 * row (the schema, then the tenant's image host rule), so the last answer is kept: one parse per
 * request. Callers only read the URL; it must not be changed.
 */
export function parseHttpUrl(value: string): URL | undefined {
  if (value === lastValue) return lastUrl;
  // Only http(s) candidates are kept: a data URI of megabytes is never held on to.
  if (!/^https?:\/\//i.test(value)) return undefined;
  // A backslash or a control character is read differently by different URL parsers (WHATWG
  // takes `\` for `/` and drops tabs; others do not): the host checked here could then differ
  // from the host the model's fetcher reads in the very same string. Such a URL is refused.
  if (ambiguous(value)) return undefined;
  let url: URL | undefined;
  try {
    const parsed = new URL(value);
    if ((parsed.protocol === 'http:' || parsed.protocol === 'https:') && parsed.hostname !== '') url = parsed;
  } catch {
    // not a URL
  }
  lastValue = value;
  lastUrl = url;
  return url;
}

const isHttpUrl = (value: string): boolean => parseHttpUrl(value) !== undefined;

const IMAGE_URL_FORM =
  'image_url must be an http(s) URL (no backslashes or control characters) or a data URI of the form data:image/<png|jpeg|webp|gif|avif>;base64,<data>';

/**
 * What is wrong with a data URI's base64 `data` (the URI of the accepted form), if anything: base64 a decoder would refuse
 * (a length that is not a multiple of 4), or bytes that are no image the model takes. A paid job
 * would fail on either. The type the bytes show may differ from the declared one (a browser
 * labels a file by its name), as the model reads the bytes.
 */
function dataUriProblem(data: string): string | undefined {
  if (data.length % 4 !== 0) return 'image_url holds base64 data whose length is not a multiple of 4: it is cut short or not padded';
  const head = Buffer.from(data.slice(0, (Math.ceil(SNIFF_BYTES / 3) + 1) * 4), 'base64');
  if (sniffImageType(head) === undefined) return `image_url holds data that is not a ${ACCEPTED_IMAGE_TYPES} image`;
  return undefined;
}

export const ImageUrl = z.string({ error: 'image_url must be a string' }).check((ctx) => {
  const value = ctx.value;
  if (isHttpUrl(value)) return;
  const dataUri = DATA_URI.exec(value);
  const problem = dataUri ? dataUriProblem(dataUri[2]!) : IMAGE_URL_FORM;
  if (problem) ctx.issues.push({ code: 'custom', message: problem, input: value });
});

export const MAX_LORAS = 16;

export const IMAGE_SIZE_PRESETS = [
  'square_hd',
  'square',
  'portrait_4_3',
  'portrait_16_9',
  'landscape_4_3',
  'landscape_16_9',
] as const;

/** The side fal's model gives an explicit image_size whose width or height is left out. */
export const IMAGE_SIDE_DEFAULT = 512;

export const ImageSize = z
  .union([
    z.enum(IMAGE_SIZE_PRESETS, {
      error: `image_size must be one of ${IMAGE_SIZE_PRESETS.join(', ')} or {width, height}`,
    }),
    z.strictObject({
      // Each may be left out: fal's model gives it 512 (fal's client types ImageSize so).
      width: range('image_size.width', 1, 14142, true)
        .optional()
        .meta({ description: `Width in pixels (${IMAGE_SIDE_DEFAULT} when left out).`, default: IMAGE_SIDE_DEFAULT }),
      height: range('image_size.height', 1, 14142, true)
        .optional()
        .meta({ description: `Height in pixels (${IMAGE_SIDE_DEFAULT} when left out).`, default: IMAGE_SIDE_DEFAULT }),
    }),
    // Optional in the model with no default: null is the same as left out (see seed).
    z.null(),
  ])
  .meta({
    description:
      'Size of the generated image: a preset name or an explicit {width, height}. Left out (or null), the model follows the input image.',
  });

export const Lora = z.strictObject(
  {
  path: z
    .string({ error: 'loras[].path must be a string' })
    .min(1, { error: 'loras[].path must not be empty', abort: true })
    .refine((v) => isHttpUrl(v) || (HF_NAME.test(v) && !v.includes('..')), {
      error: 'loras[].path must be an http(s) URL (no backslashes or control characters) or a Hugging Face name such as owner/repo',
    })
    .meta({ description: 'URL or Hugging Face name of the LoRA weights.' }),
  scale: z
    .number({ error: 'loras[].scale must be a number' })
    .optional()
    .meta({ description: 'How strongly the LoRA is applied.', default: 1 }),
  // In fal's client types for this model (LoraWeight), passed on as given.
  force: z
    .boolean({ error: 'loras[].force must be a boolean' })
    .optional()
    .meta({ description: 'Force the use of the weights as an embedding.' }),
  },
  { error: 'each loras item must be an object {path, scale, force}' },
);

export const ModelInput = z
  .strictObject({
    prompt: z
      .string({ error: (issue) => (issue.input === undefined ? 'prompt is required' : 'prompt must be a string') })
      .min(1, { error: 'prompt must not be empty' })
      .meta({ description: 'What the generated image should show.', examples: [SEED_REQUEST.prompt] }),
    image_url: ImageUrl.meta({
      description:
        'The input image: an http(s) URL the model can fetch, or a data:image/...;base64, URI (png, jpeg, webp, gif, avif).',
      examples: [SEED_REQUEST.image_url],
    }),
    strength: range('strength', 0.01, 1)
      .optional()
      .meta({
        description: 'How far the result may move from the input image: 1 ignores it, 0.01 keeps it almost as is.',
        default: 0.85,
      }),
    num_inference_steps: range('num_inference_steps', 1, 50, true)
      .optional()
      .meta({ description: 'Denoising steps: more is slower and finer.', default: 28 }),
    guidance_scale: range('guidance_scale', 0, 35)
      .optional()
      .meta({ description: 'How closely the image follows the prompt (CFG scale).', default: 3.5 }),
    num_images: range('num_images', 1, 4, true)
      .optional()
      .meta({ description: 'How many images to generate.', default: 1 }),
    enable_safety_checker: z
      .boolean({ error: 'enable_safety_checker must be true or false' })
      .optional()
      .meta({ description: 'Run the NSFW checker on the results.', default: true }),
    output_format: z
      .enum(['jpeg', 'png'], { error: 'output_format must be "jpeg" or "png"' })
      .optional()
      .meta({ description: 'File format of the generated images.', default: 'jpeg' }),
    seed: z
      .int({
        // zod's int is a safe integer: a larger JSON number has already lost its last digits.
        error: (issue) =>
          issue.code === 'too_big' || issue.code === 'too_small' ? 'seed must be an integer of at most 2^53 - 1 either way' : 'seed must be an integer',
      })
      // Optional in the model with no default: null is the same as left out (clients that write
      // every field, such as pydantic's model_dump(), send it), and passes to fal as sent.
      .nullish()
      .meta({ description: 'Seed for reproducible results; random when left out or null.' }),
    image_size: ImageSize.optional(),
    loras: z
      .array(Lora, { error: 'loras must be an array of {path, scale}' })
      // fal publishes no bound; the gateway keeps one so a body cannot carry millions of items.
      .max(MAX_LORAS, { error: `loras may hold at most ${MAX_LORAS} items` })
      .optional()
      .meta({ description: `LoRA weights to apply (at most ${MAX_LORAS}).`, default: [] }),
    sync_mode: z
      .boolean({ error: 'sync_mode must be true or false' })
      .optional()
      .meta({
        description: 'Return images as data URIs and keep no history upstream.',
        default: false,
      }),
    acceleration: z
      .enum(['none', 'regular'], { error: 'acceleration must be "none" or "regular"' })
      .optional()
      .meta({ description: 'Speed/quality trade-off.', default: 'none' }),
  }, { error: 'the body must be a JSON object holding the model input' })
  .meta({
    id: 'ModelInput',
    description: 'Input of fal-ai/flux-lora/image-to-image. Unknown fields are rejected.',
    examples: [SEED_REQUEST],
  });

export type ModelInput = z.infer<typeof ModelInput>;
