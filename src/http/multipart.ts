import type { FastifyInstance } from 'fastify';

export interface MultipartOptions {
  /** Largest uploaded image accepted (bytes). */
  maxFileBytes: number;
}

/**
 * multipart/form-data on the submit route: an `image` file part and the other model fields as
 * parts, turned into the same JSON model input before validation.
 */
export async function registerMultipartSubmit(_app: FastifyInstance, _options: MultipartOptions): Promise<void> {
  // Filled in by the uploads work.
}
