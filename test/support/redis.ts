import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

/** The Redis the tests share: REDIS_URL, or the machine's standard one. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';

async function ping(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * Whether the Redis tests can run. Without Redis they are reported as skipped, with the reason
 * in their name; in CI, or when REDIS_URL is set explicitly, a missing Redis is a failure.
 */
export const redisAvailable = await ping(REDIS_URL);
if (!redisAvailable && (process.env.CI || process.env.REDIS_URL)) {
  throw new Error(`Redis is required here but does not answer at ${REDIS_URL}`);
}
export const skipReason = redisAvailable ? '' : ` (skipped: no Redis at ${REDIS_URL}; start one or set REDIS_URL)`;

/** A key prefix no other test uses, so test files can share one Redis. */
export const uniquePrefix = () => `fgw-test:${randomBytes(6).toString('hex')}:`;

/** A client for inspecting what the gateway wrote, with the same prefix. */
export const inspect = (prefix: string) => new Redis(REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 });

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A redis-server of the test's own, on a spare port, that the test may stop and restart. */
export class PrivateRedis {
  private process: ChildProcess | undefined;
  /** `password`: the server requires it (requirepass). */
  constructor(
    readonly port: number,
    private readonly password?: string,
  ) {}

  get url() {
    return `redis://${this.password ? `:${encodeURIComponent(this.password)}@` : ''}127.0.0.1:${this.port}/0`;
  }

  async start(): Promise<void> {
    const auth = this.password ? ['--requirepass', this.password] : [];
    this.process = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...auth], { stdio: 'ignore' });
    const deadline = Date.now() + 5_000;
    while (!(await ping(this.url))) {
      if (Date.now() > deadline) throw new Error(`redis-server did not start on ${this.port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Freezes the server: connections stay open but nothing answers, the way a stuck Redis looks. */
  pause(): void {
    this.process?.kill('SIGSTOP');
  }

  resume(): void {
    this.process?.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await exited;
  }
}
