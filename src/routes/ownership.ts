import type { FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import type { JobStore } from '../jobs/job-store.js';
import { tenantOf } from '../tenants/auth.js';

/**
 * Lets a request through only for the tenant that submitted the job. Another tenant's job and
 * an unknown id look the same (404), so existence is not disclosed; a store failure is a 503,
 * never a 404 that would make a client think its job is gone (and is counted in the metrics).
 */
export async function assertOwned(jobs: JobStore, request: FastifyRequest, requestId: string): Promise<void> {
  let owner: string | undefined;
  try {
    owner = await jobs.ownerOf(requestId);
  } catch (err) {
    request.server.metrics.storeError('jobs', 'owner_of');
    throw new errors.StoreUnavailable({ cause: err });
  }
  if (owner !== tenantOf(request).id) throw new errors.RequestNotFound();
}
