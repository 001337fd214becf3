import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import closeWithGrace from 'close-with-grace';
import { createLogDestination } from './log-destination.js';
import { buildApp } from './app.js';
import { ConfigError, parseConfig } from './config.js';
import { attachTenantsReloader, readTenantsSnapshot } from './tenants/reload.js';
import { TenantsFileError } from './tenants/tenants-file.js';

/** Of the shutdown budget, what is kept for closing once status streams have had their time (ms). */
const STREAM_CLOSE_MARGIN_MS = 2_000;
/** Of the shutdown budget, what is kept for answering the calls ended at its end, and exiting (ms). */
const UPSTREAM_ABANDON_MARGIN_MS = 1_000;

/**
 * The only entry point that listens. Configuration problems end start-up with one line per
 * problem and exit code 1, never a stack trace. SIGHUP reloads the tenants file (so does a change
 * to it with TENANTS_WATCH); SIGTERM and SIGINT shut down gracefully.
 */
async function main(): Promise<void> {
  let config;
  let snapshot;
  // A .env in the working directory (made from .env.example) is read, as `npm start` and
  // `npm run dev` are expected to; a variable set in the environment wins over the file. The
  // Docker image has none: it takes its settings from the environment alone.
  const envFile = resolve('.env');
  const readEnvFile = existsSync(envFile);
  try {
    if (readEnvFile) process.loadEnvFile(envFile);
    config = parseConfig(process.env);
    snapshot = await readTenantsSnapshot(config.TENANTS_FILE);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof TenantsFileError) {
      process.stderr.write(`fal-gateway: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }

  const { tenants } = snapshot;
  // Log lines go to stdout in batches, asynchronously; flushed before the process exits.
  const stdout = createLogDestination(1);
  // Every exit, including a forced one after the shutdown grace period, writes what is buffered.
  process.once('exit', () => stdout.flushSync());
  const app = await buildApp({ config, tenants, logStream: stdout.stream });
  if (readEnvFile) app.log.info({ file: envFile }, 'settings read from .env (variables set in the environment win)');
  const reloader = attachTenantsReloader(app, { file: config.TENANTS_FILE, watch: config.TENANTS_WATCH, appliedDigest: snapshot.digest });
  process.on('SIGHUP', () => void reloader.reload('signal'));
  if (tenants.length === 0) app.log.warn({ file: config.TENANTS_FILE }, 'the tenants file lists no tenant: every call will be 401');
  if (!config.PUBLIC_BASE_URL && config.NODE_ENV === 'production') {
    app.log.warn('PUBLIC_BASE_URL is not set: rewritten queue URLs take their origin from each request\'s Host header; set it in production');
  }

  // SIGHUP reloads the tenants file: it must not also start a shutdown.
  // Its own messages (a second signal, the budget running out) go to the log as JSON lines too.
  const shutdownLog = { error: (what: unknown) => app.log.error(what instanceof Error ? { err: what } : { detail: String(what) }, 'shutdown') };
  closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS, skip: ['SIGHUP'], logger: shutdownLog }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests');
    // A submit still waiting on a slow upstream when the budget runs out would die with the
    // process: its caller left with a dropped connection, the job perhaps queued and paid, and
    // no log line. Just before that, such calls end as their own deadline would: the caller gets
    // 500 submit_outcome_unknown (its Idempotency-Key keeps that answer) and the job is logged.
    const abandonAt = setTimeout(() => {
      const count = app.abandonUpstreamCalls('the gateway is shutting down');
      if (count > 0) app.log.error({ count }, 'upstream calls still under way at the end of the shutdown budget: ended without their answer (a submit among them may have been queued)');
    }, Math.max(0, config.SHUTDOWN_GRACE_MS - UPSTREAM_ABANDON_MARGIN_MS));
    abandonAt.unref();
    app.startDraining();
    await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DRAIN_DELAY_MS));
    // Status streams are let run towards their job's end, within the budget less a margin for
    // the rest of the close: most jobs take seconds, and a stream cut off is an error for its
    // client. Those still open then are cut off (their clients reconnect elsewhere, or poll).
    const streamBudget = config.SHUTDOWN_GRACE_MS - config.SHUTDOWN_DRAIN_DELAY_MS - STREAM_CLOSE_MARGIN_MS;
    if (streamBudget > 0 && !(await app.streamsEnded(streamBudget))) app.log.warn('status streams still open at the end of their shutdown budget: cutting them off');
    await app.close();
    app.log.info('shut down cleanly');
    stdout.flushSync();
  });

  await app.listen({ port: config.PORT, host: config.HOST });
  const started = { tenants: tenants.length, upstream: config.UPSTREAM_BASE_URL, docs: config.DOCS_ENABLED ? '/docs' : 'off' };
  // "Ready" only when /readyz would say so: with Redis still unreachable, the gateway listens
  // but refuses submits, and the line says that instead ("redis connected" follows when it is).
  if (await app.storeReady()) app.log.info(started, 'fal gateway ready');
  else app.log.warn(started, 'fal gateway listening, not ready: its store (Redis) does not answer yet, or is a read-only replica; /readyz answers 503 until it answers as the primary');
  app.log.info(
    { file: config.TENANTS_FILE, watch: config.TENANTS_WATCH },
    config.TENANTS_WATCH ? 'tenants file reloads when it changes and on SIGHUP' : 'tenants file reloads on SIGHUP',
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`fal-gateway: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
