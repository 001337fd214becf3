/**
 * The one model this gateway serves. Submit uses the full model id; every per-request URL uses
 * the app id (owner/app) only, exactly as fal's queue does.
 */
export const MODEL_ID = 'fal-ai/flux-lora/image-to-image';
export const APP_ID = 'fal-ai/flux-lora';

/** Upstream paths, relative to the configured base URL. `id` must already be validated. */
export const upstreamPaths = {
  submit: () => `/${MODEL_ID}`,
  status: (id: string) => `/${APP_ID}/requests/${encodeURIComponent(id)}/status`,
  statusStream: (id: string) => `/${APP_ID}/requests/${encodeURIComponent(id)}/status/stream`,
  result: (id: string) => `/${APP_ID}/requests/${encodeURIComponent(id)}`,
  cancel: (id: string) => `/${APP_ID}/requests/${encodeURIComponent(id)}/cancel`,
};

/** The seed request: the example every document and test starts from. */
export const SEED_REQUEST = {
  prompt: 'A photo of a lion sitting on a stone bench',
  num_inference_steps: 28,
  guidance_scale: 3.5,
  num_images: 1,
  enable_safety_checker: true,
  output_format: 'jpeg',
  image_url: 'https://storage.googleapis.com/falserverless/example_inputs/dog.png',
  strength: 0.85,
} as const;
