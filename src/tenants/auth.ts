import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { errors } from '../errors.js';
import { checkOrigin, corsForRefusal } from '../http/cors.js';
import type { TenantRegistry } from './registry.js';
import type { Tenant } from './tenants-file.js';
import { looksLikeToken, type TokenIssuer } from './tokens.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: Tenant | null;
    /** The upstream request id a submit queued, for the request's log line. */
    jobId: string | undefined;
    /** How the tenant proved itself: a long-lived key, or a short-lived browser token. */
    credential: 'key' | 'token' | null;
  }
}

export interface AuthOptions {
  registry: () => TenantRegistry;
  tokens: TokenIssuer | undefined;
  publicBaseUrl: string | undefined;
}

const SCHEME = /^(?:Bearer|Key)[ \t]+([^\s]+)[ \t]*$/i;

/** The caller's key from `Authorization: Bearer|Key <key>` or `x-api-key: <key>`. */
export function presentedKey(headers: FastifyRequest['headers']): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = SCHEME.exec(authorization);
    if (match?.[1]) return match[1];
  }
  const apiKey = headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.trim() !== '') return apiKey.trim();
  return undefined;
}

const KEY_SCHEME = /^(?:bearer|key)$/i;
/** Schemes a caller may have meant for another service: named back to them (nothing else is). */
const OTHER_SCHEME = /^(?:basic|digest|token|negotiate|apikey|api-key)$/i;

/**
 * Why an Authorization header yields no key, for the 401: a tool that adds the scheme itself
 * (Swagger UI, a client's "bearer" option) given "Bearer <key>" sends it twice; one given the
 * key alone where the scheme is the caller's to write sends none. Never repeats what the header
 * holds beyond a known scheme's name: the rest may be a secret.
 */
export function authorizationProblem(value: string): string {
  const words = value.trim().split(/[ \t]+/).filter((w) => w !== '');
  const [first = '', second = ''] = words;
  if (words.length === 0) return 'it is empty';
  if (words.length === 1) return KEY_SCHEME.test(first) ? `it names the scheme ${first} but holds no key` : 'it holds no scheme before the key';
  if (KEY_SCHEME.test(first) && KEY_SCHEME.test(second)) {
    return `it names the scheme twice (${first} ${second} <key>): where a tool adds the scheme itself, as Swagger UI does, enter the key alone`;
  }
  if (KEY_SCHEME.test(first)) return 'it holds more than one value after the scheme';
  return OTHER_SCHEME.test(first) ? `its scheme is ${first}` : 'it holds no scheme this gateway knows before the key';
}

/**
 * Adds fields to every later log line of this request. The request's pino logger is already a
 * child made for this request alone, so the fields are set on it (cheaper than another child);
 * a logger shared between requests (e.g. logging disabled) gets a child instead.
 */
function addLogBindings(request: FastifyRequest, bindings: Record<string, string>): void {
  const log = request.log as FastifyRequest['log'] & { setBindings?: (b: Record<string, string>) => void };
  if (typeof log.setBindings === 'function' && log !== request.server.log) log.setBindings(bindings);
  else request.log = request.log.child(bindings);
}

/** The authenticated tenant of a request on a tenant route. */
export function tenantOf(request: FastifyRequest): Tenant {
  if (!request.tenant) throw new errors.Unauthorized();
  return request.tenant;
}

/**
 * Authenticates every route of the encapsulating plugin with a tenant key or a browser token,
 * then checks the browser origin against the tenant's. Runs first (onRequest), so nothing else
 * (rate limits, body parsing, validation) is spent on unauthenticated callers.
 */
export function registerAuth(app: FastifyInstance, options: AuthOptions): void {
  decorateAuth(app);
  app.addHook('onRequest', authenticationHook(options));
}

/** Declares the request fields authentication fills (once per instance tree). */
export function decorateAuth(app: FastifyInstance): void {
  if (!app.hasRequestDecorator('tenant')) app.decorateRequest('tenant', null);
  if (!app.hasRequestDecorator('credential')) app.decorateRequest('credential', null);
  if (!app.hasRequestDecorator('jobId')) app.decorateRequest('jobId', undefined);
}

/** Settles who the caller is: 401 without a tenant, 403 from an origin the tenant does not allow. */
function accept(request: FastifyRequest, reply: FastifyReply, tenant: Tenant | undefined | 'expired' | 'revoked', credential: 'key' | 'token', options: AuthOptions): void {
  if (!tenant || tenant === 'expired' || tenant === 'revoked') {
    reply.header('www-authenticate', 'Bearer realm="fal-gateway"');
    corsForRefusal(request, reply, options.registry());
    throw tenant === 'expired' ? new errors.TokenExpired() : tenant === 'revoked' ? new errors.TokenRevoked() : unauthorized(request);
  }
  checkOrigin(request, reply, tenant, options.publicBaseUrl, options.registry());
  request.tenant = tenant;
  request.credential = credential;
  addLogBindings(request, credential === 'token' ? { tenant: tenant.id, credential } : { tenant: tenant.id });
}

/** The 401 for a caller with no usable credential: says what is wrong with an Authorization header that holds no key. */
function unauthorized(request: FastifyRequest): Error {
  const authorization = request.headers.authorization;
  if (typeof authorization === 'string' && presentedKey(request.headers) === undefined) return new errors.MalformedAuthorization(authorizationProblem(authorization));
  return new errors.Unauthorized();
}

/**
 * A browser token's tenant, once its signature and claims check out; or that it has expired, or
 * that the key which minted it is no longer the tenant's (`revoked`: a page may get a new one).
 */
async function tenantOfToken(token: string, tokens: TokenIssuer, registry: () => TenantRegistry): Promise<Tenant | undefined | 'expired' | 'revoked'> {
  const verified = await tokens.verify(token);
  if (verified === 'expired') return verified;
  const tenant = verified === undefined ? undefined : registry().findById(verified.tenantId);
  if (!tenant) return undefined;
  // A tenant whose keys were all removed is disabled: its tokens stop working too.
  if (tenant.keyDigests.length === 0) return 'revoked';
  const { keyBinding } = verified!;
  // A token from before tokens named their key cannot be tied to one. Such tokens were minted
  // for an hour at most, so this branch matters only for an hour after the upgrade that brought
  // the binding, and can go in the release after it.
  if (keyBinding === undefined) return tenant;
  return tenant.keyDigests.some((digest) => tokens.bindingOf(digest) === keyBinding) ? tenant : 'revoked';
}

/** Whether the presented credential is a browser token (checked asynchronously) rather than a key. */
const isToken = (presented: string | undefined, options: AuthOptions): presented is string =>
  presented !== undefined && options.tokens !== undefined && looksLikeToken(presented);

/**
 * Whether a request that waits for `100 Continue` before sending its body may send it: it holds
 * a tenant's key, or something shaped like a browser token (checked in full once it arrives).
 * Anyone else gets their 401 without uploading the body first.
 */
export function mayUpload(headers: FastifyRequest['headers'], options: AuthOptions): boolean {
  const presented = presentedKey(headers);
  return presented !== undefined && (isToken(presented, options) || options.registry().findByKey(presented) !== undefined);
}

/** A key is a digest and a lookup: synchronous. */
function acceptKey(request: FastifyRequest, reply: FastifyReply, presented: string | undefined, options: AuthOptions): void {
  accept(request, reply, presented === undefined ? undefined : options.registry().findByKey(presented), 'key', options);
}

/** The tenant authentication step as a function: 401 unless a key or token names a tenant. */
export function tenantAuthentication(options: AuthOptions) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const presented = presentedKey(request.headers);
    if (isToken(presented, options)) {
      accept(request, reply, await tenantOfToken(presented, options.tokens!, options.registry), 'token', options);
    } else {
      acceptKey(request, reply, presented, options);
    }
  };
}

/**
 * The same step as an onRequest hook. A key is checked synchronously, so the common case costs
 * no promise; only a browser token's signature check is awaited.
 */
function authenticationHook(options: AuthOptions): onRequestHookHandler {
  const authenticate = tenantAuthentication(options);
  return function authenticateRequest(request, reply, done) {
    const presented = presentedKey(request.headers);
    if (isToken(presented, options)) {
      authenticate(request, reply).then(() => done(), done);
      return;
    }
    try {
      acceptKey(request, reply, presented, options);
    } catch (err) {
      done(err as Error);
      return;
    }
    done();
  };
}
