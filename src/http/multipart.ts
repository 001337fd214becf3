import multipart from '@fastify/multipart';
import type { SwaggerTransform } from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errors, RequestValidationError, type FalValidationEntry } from '../errors.js';
import { MODEL_ID } from '../model.js';
import { unsupportedEncoding } from './content-encoding.js';
import { ACCEPTED_IMAGE_TYPES as ACCEPTED, sniffImageType } from '../schemas/image-type.js';
import { IMAGE_SIZE_PRESETS, ModelInput } from '../schemas/model-input.js';

export interface MultipartOptions {
  /** Largest uploaded image accepted (bytes). */
  maxFileBytes: number;
  /** Largest whole form accepted (bytes): BODY_LIMIT_BYTES, as for a JSON body. */
  maxBodyBytes: number;
}

/**
 * Counts a form's bytes as they arrive. Busboy bounds the parts, not what lies around them (a
 * preamble before the first part, an epilogue after the last), so the whole body is bounded
 * here: past `limit`, reading stops and `exceeded` rejects.
 */
function boundBody(raw: FastifyRequest['raw'], limit: number): { exceeded: Promise<never>; stop: () => void; head: () => Buffer } {
  let received = 0;
  // The body's first bytes, to tell a form without parts from a body that is not this form at all.
  const head: Buffer[] = [];
  let fail: (err: Error) => void = () => {};
  const exceeded = new Promise<never>((_resolve, reject) => (fail = reject));
  exceeded.catch(() => undefined);
  const onData = (chunk: Buffer) => {
    // A copy of just those bytes: the chunk itself (up to 64 KiB of an upload) is not kept.
    if (received < HEAD_BYTES) head.push(Buffer.from(chunk.subarray(0, HEAD_BYTES - received)));
    received += chunk.length;
    if (received <= limit) return;
    raw.off('data', onData);
    raw.unpipe();
    raw.pause();
    fail(new errors.PayloadTooLarge(limit));
  };
  raw.on('data', onData);
  return { exceeded, stop: () => raw.off('data', onData), head: () => Buffer.concat(head) };
}

const HEAD_BYTES = 4096;

/** The boundary a multipart Content-Type declares (quoted or not), or undefined. */
function boundaryOf(contentType: string | undefined): string | undefined {
  const match = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType ?? '');
  return match?.[1] ?? match?.[2];
}

/** The submit routes: the gateway's own path and fal's. Nothing else takes a form. */
export const SUBMIT_URLS: ReadonlySet<string> = new Set(['/v1/image-to-image', `/${MODEL_ID}`]);

/** The file part; it becomes the model input's `image_url`. */
export const IMAGE_PART = 'image';

/** A text part holds one field of the model input: a prompt, a number, a small JSON value. */
export const MAX_FIELD_BYTES = 64 * 1024;

/** The model input has 13 fields; room for a few more, reported as unknown by the validation. */
export const MAX_FIELDS = 20;

/**
 * The multipart variant of the submit body, for the OpenAPI document only: `image` is a file
 * (`format: binary` is what makes Swagger UI show a file picker) and every other field of the
 * model input is a text part. Requests are validated against ModelInput after the conversion.
 */
const { prompt, image_url: imageUrl, ...otherFields } = ModelInput.shape;
export const MultipartModelInput = z
  .strictObject({
    prompt,
    [IMAGE_PART]: z
      .string()
      .optional()
      .meta({
        format: 'binary',
        description: `The input image file (${ACCEPTED}; the type is read from the file's bytes, not from its name or declared type). Sent upstream as a data:image/...;base64, URI, so the image_url size limit applies. Send this or image_url, not both.`,
      }),
    // Starts empty in Swagger UI's form (a filled-in example beside a chosen file would be "both").
    image_url: imageUrl
      .optional()
      .meta({ description: `The input image as a URL (http(s), or a data:image/...;base64, URI) instead of the file part ${IMAGE_PART}.`, examples: [''] }),
    ...otherFields,
    // Swagger UI fills every form field: with its default, which is the model's own, else with a
    // sample (a seed's minimum, image_size's first preset), which would make every upload alike.
    // These two are documented as the text parts they are, with an empty example: they start
    // empty, and an empty part counts as not sent (a random seed, the input image's size), as in
    // the JSON example. The parts are validated as the model input, after the conversion.
    seed: z
      .string()
      .regex(/^-?\d*$/)
      .optional()
      .meta({ description: 'Seed for reproducible results (an integer); random when left empty.', examples: [''] }),
    image_size: z
      .string()
      .optional()
      .meta({
        description: `Size of the generated image: a preset (${IMAGE_SIZE_PRESETS.join(', ')}) or {"width": ..., "height": ...} as JSON; the input image's size when left empty.`,
        examples: [''],
      }),
  })
  .meta({
    description:
      'The model input as multipart/form-data: the input image as the file part `image` (or its URL as the text part `image_url`), every other field as a text part (numbers and booleans as text, `image_size` as a preset name or {width, height} JSON, `loras` as a JSON array, or its items as JSON separated by commas). An empty part counts as not sent. Validated exactly as the JSON body.',
  });

type TransformInput = Parameters<typeof jsonSchemaTransform>[0];

/**
 * Swagger's transform for a submit route: the zod provider's (the document's global transform),
 * then the body as two media types (application/json first, so Swagger UI still opens on the JSON
 * example). Only the document changes: the route keeps validating ModelInput.
 */
const withMultipartBody: SwaggerTransform = (document) => {
  const transformed = jsonSchemaTransform(document as TransformInput) as { schema: Record<string, unknown>; url: string };
  if (transformed.schema.body === undefined) return transformed;
  const form = jsonSchemaTransform({ ...document, schema: { body: MultipartModelInput } } as TransformInput) as { schema: { body: unknown } };
  transformed.schema.body = {
    content: {
      'application/json': { schema: transformed.schema.body },
      'multipart/form-data': { schema: form.schema.body },
    },
  };
  return transformed;
};

interface ZodNode {
  def: { type: string; innerType?: ZodNode };
}

/** The zod type of a model input field (`number`, `boolean`, `array`, ...), optional/default unwrapped. */
function fieldType(field: string): string | undefined {
  let node = Object.hasOwn(ModelInput.shape, field) ? ((ModelInput.shape as Record<string, unknown>)[field] as ZodNode) : undefined;
  while (node?.def.innerType && ['optional', 'nullable', 'default'].includes(node.def.type)) node = node.def.innerType;
  return node?.def.type;
}

const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function parseJson(text: string, fallback: unknown): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return fallback;
  }
}

/**
 * A text part as the type the model input expects for its field. What cannot be read is left
 * as the text, so the validation reports it with its usual message.
 */
function convert(field: string, value: unknown): unknown {
  // A part sent with Content-Type application/json arrives already parsed.
  if (typeof value !== 'string') return value;
  const trimmed = value.trim();
  switch (fieldType(field)) {
    case 'number':
      return DECIMAL.test(trimmed) ? Number(trimmed) : value;
    case 'boolean':
      // `True`/`False` too: what Python's str() makes of a boolean.
      return /^true$/i.test(trimmed) ? true : /^false$/i.test(trimmed) ? false : value;
    case 'union':
      // image_size: a preset name as it is, {width, height} as JSON.
      return trimmed.startsWith('{') ? parseJson(trimmed, value) : value;
    case 'object':
      return parseJson(trimmed, value);
    default:
      return value;
  }
}

/**
 * An array field (loras): a part holds a JSON array, or its items as JSON separated by commas
 * (Swagger UI sends `{...},{...}`); several parts add up. Text that is neither is left as it is.
 */
function convertArray(values: unknown[]): unknown {
  const items: unknown[] = [];
  for (const value of values) {
    if (typeof value !== 'string') {
      items.push(...(Array.isArray(value) ? value : [value]));
      continue;
    }
    const trimmed = value.trim();
    const parsed = parseJson(trimmed.startsWith('[') ? trimmed : `[${trimmed}]`, undefined);
    if (!Array.isArray(parsed)) return values.length === 1 ? value : values;
    items.push(...parsed);
  }
  return items;
}

const problem = (loc: Array<string | number>, msg: string, type = 'value_error'): FalValidationEntry => ({ loc: ['body', ...loc], msg, type });

/** @fastify/multipart's and busboy's failures, as the gateway's answers. */
function fromMultipartError(err: unknown, maxFileBytes: number): Error {
  const code = (err as { code?: unknown }).code;
  switch (code) {
    case 'FST_REQ_FILE_TOO_LARGE':
      return new errors.ImageTooLarge(maxFileBytes);
    case 'FST_FILES_LIMIT':
      return new RequestValidationError([problem([], `Only one file may be sent: the input image, as the "${IMAGE_PART}" part`)]);
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new RequestValidationError([problem([], `The form may hold at most ${MAX_FIELDS} fields and one file`)]);
    case 'FST_PROTO_VIOLATION':
      return new RequestValidationError([problem([], 'A part name must not be a property of Object.prototype', 'extra_forbidden')]);
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new RequestValidationError([problem([], 'A part declared as application/json is not valid JSON', 'json_invalid')]);
    default:
      return new errors.BadRequest(`The multipart body could not be read: ${(err as Error).message}`);
  }
}

/**
 * Reads the whole form (the file is bounded by the file size limit, each text part by
 * MAX_FIELD_BYTES) and turns it into the JSON model input the route validates.
 */
async function readForm(request: FastifyRequest, { maxFileBytes, maxBodyBytes }: MultipartOptions): Promise<Record<string, unknown>> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBodyBytes) throw new errors.PayloadTooLarge(maxBodyBytes);
  const fields = new Map<string, unknown[]>();
  const problems: FalValidationEntry[] = [];
  let image: Buffer | undefined;
  let partsSeen = 0;
  const parts = request.parts()[Symbol.asyncIterator]();
  // The first step pipes the request into the parser; the bound counts from there on.
  let first: ReturnType<typeof parts.next> | undefined = parts.next();
  const bound = boundBody(request.raw, maxBodyBytes);
  try {
    for (;;) {
      const step = await Promise.race([first ?? parts.next(), bound.exceeded]);
      first = undefined;
      if (step.done) break;
      partsSeen++;
      const part = step.value;
      if (part.type === 'file') {
        // Read even a misnamed file, so the request is consumed and the answer lists every problem.
        const bytes = await Promise.race([part.toBuffer(), bound.exceeded]);
        if (part.fieldname !== IMAGE_PART) {
          problems.push(problem([part.fieldname], `Only the "${IMAGE_PART}" part may be a file; send ${part.fieldname} as a text field`));
        } else if (!(bytes.length === 0 && part.filename === '')) {
          // (A form's file input left empty sends an empty part without a file name: no image.)
          image = bytes;
        }
        continue;
      }
      if (part.valueTruncated) {
        problems.push(problem([part.fieldname], `${part.fieldname} is longer than the ${MAX_FIELD_BYTES} bytes a form field may hold`, 'string_too_long'));
        continue;
      }
      // A form sends its empty inputs too (Swagger UI an empty list as ""): an empty part is a field not sent.
      if (part.value === '') continue;
      fields.set(part.fieldname, [...(fields.get(part.fieldname) ?? []), part.value]);
    }
  } catch (err) {
    if ((err as { code?: unknown }).code === 'FGW_PAYLOAD_TOO_LARGE') throw err;
    throw fromMultipartError(err, maxFileBytes);
  } finally {
    bound.stop();
  }
  // The parser takes a connection closed mid-body for the end of the form: never submit what is left of it.
  if (!request.raw.complete) throw new errors.BadRequest('The multipart body ended before it was complete');
  // A body that never names its boundary holds no part at all: not an empty form to report as
  // missing every field, but another format under a multipart type (JSON, say), or a boundary
  // changed on the way.
  const boundary = boundaryOf(request.headers['content-type']);
  if (partsSeen === 0 && boundary !== undefined && bound.head().length > 0 && !bound.head().includes(`--${boundary}`)) {
    throw new errors.BadRequest(
      `The multipart body holds no part: nothing in it is delimited by its boundary ("${boundary}"). Send JSON as application/json, or a form whose parts use the boundary its Content-Type declares`,
    );
  }

  if (fields.has(IMAGE_PART)) {
    problems.push(problem([IMAGE_PART], `${IMAGE_PART} must be a file part (${ACCEPTED}); send an image URL as image_url instead`));
  }
  if (image && fields.has('image_url')) {
    problems.push(problem([IMAGE_PART], `Send the input image either as the "${IMAGE_PART}" file part or as image_url, not both`));
  }
  const type = image && sniffImageType(image);
  if (image && !type) {
    problems.push(problem([IMAGE_PART], `${IMAGE_PART} must be a ${ACCEPTED} image; the file's content is none of these`));
  }
  const body: Record<string, unknown> = {};
  for (const [field, values] of fields) {
    if (field === IMAGE_PART) continue;
    if (fieldType(field) === 'array') body[field] = convertArray(values);
    else if (values.length > 1) problems.push(problem([field], `${field} was sent ${values.length} times; send it once`));
    else body[field] = convert(field, values[0]);
  }
  if (problems.length > 0) throw new RequestValidationError(problems);
  if (image && type) body.image_url = `data:image/${type};base64,${image.toString('base64')}`;
  return body;
}

/**
 * multipart/form-data on the submit route: an `image` file part and the other model fields as
 * parts, turned into the same JSON model input before validation.
 */
export async function registerMultipartSubmit(app: FastifyInstance, options: MultipartOptions): Promise<void> {
  const { maxFileBytes } = options;
  await app.register(multipart, {
    limits: {
      fileSize: maxFileBytes,
      files: 1,
      fields: MAX_FIELDS,
      parts: MAX_FIELDS + 1,
      fieldSize: MAX_FIELD_BYTES,
    },
  });

  // The submit routes document the multipart variant of their body (the routes are added after this).
  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (!methods.includes('POST') || !SUBMIT_URLS.has(route.url)) return;
    route.config = { ...route.config, swaggerTransform: withMultipartBody };
  });

  // The form becomes the body before validation, so the JSON body's rules apply unchanged.
  // Authentication and rate limits (onRequest) have already run: nothing is read before them.
  // A callback hook: the JSON requests that make up nearly all traffic pass with no promise.
  app.addHook('preValidation', (request, _reply, done) => {
    if (!request.isMultipart()) {
      done();
      return;
    }
    if (request.method !== 'POST' || !SUBMIT_URLS.has(request.routeOptions.url ?? '')) {
      done(new errors.UnsupportedMediaType(request.headers['content-type'] ?? '(none)'));
      return;
    }
    const encoded = unsupportedEncoding(request.headers);
    if (encoded) {
      done(encoded);
      return;
    }
    readForm(request, options).then((body) => {
      request.body = body;
      done();
    }, done);
  });
}
