import { z } from 'zod';
import { ErrorEnvelope } from './error.js';

/**
 * fal's queue shapes. The gateway relays upstream bodies untouched except for the three queue URL
 * fields, so these schemas are loose (unknown fields allowed): they document and type the shapes,
 * they never strip what fal adds.
 */

export const QueueState = z.enum(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']).meta({
  description: 'IN_QUEUE → IN_PROGRESS → COMPLETED. There is no failed state: errors show in the result.',
});

export const LogEntry = z.looseObject({
  message: z.string(),
  level: z.enum(['STDERR', 'STDOUT', 'ERROR', 'INFO', 'WARN', 'DEBUG']),
  source: z.string(),
  timestamp: z.string(),
});

const EXAMPLE_ID = 'b0457ca3-8883-4d77-ba7b-45a733adb157';
const EXAMPLE_BASE = `https://fal-gateway.example.com/v1/requests/${EXAMPLE_ID}`;
const EXAMPLE_URLS = { response_url: EXAMPLE_BASE, status_url: `${EXAMPLE_BASE}/status`, cancel_url: `${EXAMPLE_BASE}/cancel` };

const queueUrls = {
  status_url: z.string().meta({ description: 'Gateway URL to poll for status (GET).' }),
  response_url: z.string().meta({ description: 'Gateway URL of the result (GET).' }),
  cancel_url: z.string().meta({ description: 'Gateway URL to cancel the job (PUT).' }),
};

export const QueueStatus = z
  .looseObject({
    status: QueueState,
    request_id: z.string().optional(),
    status_url: queueUrls.status_url.optional(),
    response_url: queueUrls.response_url.optional(),
    cancel_url: queueUrls.cancel_url.optional(),
    queue_position: z.int().optional().meta({ description: 'Jobs ahead of this one (IN_QUEUE only).' }),
    logs: z.array(LogEntry).nullable().optional().meta({ description: 'Runner logs, with ?logs=1.' }),
    metrics: z
      .looseObject({ inference_time: z.number().optional().meta({ description: 'Seconds.' }) })
      .optional(),
    error: z.string().nullable().optional(),
    error_type: z.string().nullable().optional(),
  })
  .meta({
    id: 'QueueStatus',
    description: 'Status of a queued job (fal queue status object, URLs pointing at the gateway).',
    examples: [
      {
        status: 'COMPLETED',
        request_id: EXAMPLE_ID,
        ...EXAMPLE_URLS,
        logs: [{ message: 'Inference finished', level: 'INFO', source: 'USER', timestamp: '2026-01-01T12:00:03.000Z' }],
        metrics: { inference_time: 2.9 },
      },
    ],
  });

export const SubmitResponse = z
  .looseObject({
    status: z.literal('IN_QUEUE'),
    request_id: z.string().meta({ description: 'Id of the job; use it with the /v1/requests routes.' }),
    ...queueUrls,
    queue_position: z.int().optional(),
    logs: z.null().optional(),
    metrics: z.looseObject({}).optional(),
  })
  .meta({
    id: 'SubmitResponse',
    description: 'The job was queued upstream.',
    examples: [{ status: 'IN_QUEUE', request_id: EXAMPLE_ID, ...EXAMPLE_URLS, logs: null, metrics: {}, queue_position: 0 }],
  });

export const ImageFile = z.looseObject({
  url: z.string(),
  width: z.int().optional(),
  height: z.int().optional(),
  content_type: z.string().optional(),
  file_name: z.string().optional(),
  file_size: z.int().optional(),
});

export const ModelOutput = z
  .looseObject({
    images: z.array(ImageFile),
    timings: z.record(z.string(), z.number()).optional(),
    seed: z.int().optional(),
    has_nsfw_concepts: z.array(z.boolean()).optional(),
    prompt: z.string().optional(),
  })
  .meta({
    id: 'ModelOutput',
    description: 'Result of a completed job: the generated images.',
    examples: [
      {
        images: [
          {
            url: 'https://v3.fal.media/files/lion/0.jpeg',
            width: 1024,
            height: 768,
            content_type: 'image/jpeg',
            file_name: '0.jpeg',
            file_size: 34395,
          },
        ],
        timings: { inference: 2.9 },
        seed: 1393610032,
        has_nsfw_concepts: [false],
        prompt: 'A photo of a lion sitting on a stone bench',
      },
    ],
  });

export const CancelResponse = z
  .looseObject({
    status: z.enum(['CANCELLATION_REQUESTED', 'ALREADY_COMPLETED', 'NOT_FOUND']),
  })
  .meta({ id: 'CancelResponse', description: "The upstream's answer to a cancel.", examples: [{ status: 'CANCELLATION_REQUESTED' }] });

/**
 * A cancel of a job this tenant does not own (or that does not exist): the gateway's error
 * envelope with fal's own answer to an unknown request, so code that reads either finds it.
 */
export const CancelNotFound = ErrorEnvelope.extend({ status: z.literal('NOT_FOUND') }).meta({
  id: 'CancelNotFound',
  description: "No such request for this tenant: fal's {\"status\": \"NOT_FOUND\"} and the gateway's {detail, error_type}.",
  examples: [{ status: 'NOT_FOUND', detail: 'Request not found', error_type: 'request_not_found' }],
});

export type QueueStatus = z.infer<typeof QueueStatus>;
export type SubmitResponse = z.infer<typeof SubmitResponse>;
export type ModelOutput = z.infer<typeof ModelOutput>;
