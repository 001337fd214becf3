import type { FastifyInstance } from 'fastify';

/** GET /playground: a small page to try the whole flow in a browser. */
export async function playgroundRoutes(_app: FastifyInstance): Promise<void> {
  // Filled in by the playground work.
}
