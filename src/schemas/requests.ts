import { z } from 'zod';

/** Request parts other than the model input: path ids, query and fal's queue headers. */

export const REQUEST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const RequestIdParams = z.object({
  request_id: z
    .string()
    .regex(REQUEST_ID_PATTERN, { error: 'request_id must be the id returned by submit (letters, digits, "-", "_", ".")' })
    .meta({ description: 'The `request_id` returned by submit.', examples: ['c0ffee00-1234-4abc-8def-0123456789ab'] }),
});

/** A yes/no query flag as clients send it: 1 or 0, true or false in any case (Python sends True), or bare (`?logs`: on). */
// Spelled without the `i` flag: the OpenAPI document carries the pattern, and JSON Schema has no flags.
const FLAG = /^(?:[01]|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|)$/;

/** Whether a flag accepted by FLAG is on. */
export const flagOn = (value: string | undefined): boolean => value !== undefined && /^(?:1|true|)$/i.test(value);

export const StatusQuery = z.object({
  logs: z
    .string()
    .regex(FLAG, { error: 'logs must be 1, 0, true or false' })
    .optional()
    .meta({ description: 'Set to 1 (or true) to include the runner logs.', default: '0' }),
});

const jsonObject = (value: string) => {
  try {
    const parsed: unknown = JSON.parse(value);
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed);
  } catch {
    return false;
  }
};

/** fal's queue control headers: the only caller headers forwarded upstream. */
export const SubmitHeaders = z.looseObject({
  'x-fal-queue-priority': z
    .enum(['normal', 'low'], { error: 'X-Fal-Queue-Priority must be normal or low' })
    .optional()
    .meta({ description: 'Queue priority upstream.' }),
  'x-fal-runner-hint': z.string().max(256).optional().meta({ description: 'Routing hint for fal runners.' }),
  'x-fal-request-timeout': z
    .string()
    .regex(/^\d+(\.\d+)?$/, { error: 'X-Fal-Request-Timeout must be a number of seconds' })
    .optional()
    .meta({ description: 'Seconds the job may wait to start before fal gives up (504).' }),
  'x-fal-object-lifecycle-preference': z
    .string()
    .refine(jsonObject, { error: 'X-Fal-Object-Lifecycle-Preference must be a JSON object' })
    .optional()
    .meta({ description: 'JSON, e.g. {"expiration_duration_seconds": 3600}.' }),
  'x-fal-store-io': z.enum(['0', '1'], { error: 'X-Fal-Store-IO must be 0 or 1' }).optional(),
  'idempotency-key': z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, { error: 'Idempotency-Key must be 1-255 visible ASCII characters' })
    .optional()
    .meta({
      description:
        'Makes a retried submit safe: the same key with the same body within 24 h replays the first answer (same request_id) instead of queuing another paid job. The same key with another body is 422.',
    }),
  'x-fal-no-retry': z
    .enum(['0', '1', 'true', 'false', 'yes', 'no'], { error: 'x-fal-no-retry must be 0, 1, true, false, yes or no' })
    .optional()
    .meta({ description: "1, true or yes disables fal's own retries of the job." }),
});
