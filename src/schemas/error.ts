import { z } from 'zod';

/** fal's error dialect, used for every error the gateway answers. */
export const ValidationEntry = z.object({
  loc: z.array(z.union([z.string(), z.int()])).meta({ description: 'Where the problem is: ["body", "strength"].' }),
  msg: z.string().meta({ description: 'What is wrong, naming the field and the allowed values.' }),
  type: z.string().meta({ description: 'Stable machine-readable code, e.g. less_than_equal, missing.' }),
});

export const ErrorEnvelope = z
  .object({
    detail: z.union([z.string(), z.array(ValidationEntry)]),
    error_type: z.string().meta({ description: 'snake_case category, e.g. rate_limited, validation_error.' }),
  })
  .meta({
    id: 'Error',
    description: 'Error body, in fal\'s dialect: a message or a list of validation problems, and a category.',
    examples: [{ detail: 'Request not found', error_type: 'request_not_found' }],
  });

export type ErrorEnvelope = z.infer<typeof ErrorEnvelope>;

/**
 * An error body fal itself sent, passed on as it came: `error_type` only when fal gave one, and
 * whatever else it holds (pydantic's entries carry `input`, `ctx` and `url` too).
 */
export const UpstreamErrorBody = z
  .looseObject({
    detail: z.union([z.string(), z.array(ValidationEntry.loose())]),
    error_type: z.string().optional().meta({ description: 'Present when fal (or the gateway) names a category.' }),
  })
  .meta({
    id: 'UpstreamError',
    description: "An error body as fal answered it (the model's own 422, a result that is not ready), or one of the gateway's.",
    examples: [{ detail: 'Request is still in progress' }],
  });
