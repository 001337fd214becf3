import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/**
 * The messages between the benchmark and the processes it measures. Every target (the gateway,
 * the baseline proxy) and the memory probe runs in a child of its own, so `process.cpuUsage()`
 * there counts that target's work and nothing else. A child answers its parent on IPC and exits
 * when the parent goes away, so a crashed or interrupted bench leaves no process behind.
 */

const Usage = z.object({
  cpu: z.object({ user: z.number(), system: z.number() }),
  memory: z.object({ rss: z.number(), heapUsed: z.number(), heapTotal: z.number(), external: z.number() }),
});
export type Usage = z.infer<typeof Usage>;

/** Heap and RSS before and after recording jobs in the gateway's job store (bench-memory.ts). */
export const MemoryProbeResult = z.object({
  jobs: z.number(),
  heapBefore: z.number(),
  heapAfter: z.number(),
  rssBefore: z.number(),
  rssAfter: z.number(),
  /** What per-job state was measured, as the app keeps it. */
  measured: z.array(z.string()),
});
export type MemoryProbeResult = z.infer<typeof MemoryProbeResult>;

/** Parent to child. */
const Command = z.discriminatedUnion('type', [
  z.object({ type: z.literal('usage'), id: z.number(), gc: z.boolean() }),
  z.object({ type: z.literal('profile-start'), id: z.number() }),
  z.object({ type: z.literal('profile-stop'), id: z.number(), file: z.string() }),
]);
type Command = z.infer<typeof Command>;
type CommandBody = Command extends infer C ? (C extends Command ? Omit<C, 'id'> : never) : never;

/** Child to parent. */
const Reply = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), url: z.string() }),
  z.object({ type: z.literal('memory-result'), result: MemoryProbeResult }),
  z.object({ type: z.literal('usage'), id: z.number(), usage: Usage }),
  z.object({ type: z.literal('done'), id: z.number() }),
  z.object({ type: z.literal('failed'), id: z.number().optional(), message: z.string() }),
]);
type Reply = z.infer<typeof Reply>;

function send(message: Reply): void {
  process.send?.(message);
}

function usageNow(): Usage {
  const { rss, heapUsed, heapTotal, external } = process.memoryUsage();
  return { cpu: process.cpuUsage(), memory: { rss, heapUsed, heapTotal, external } };
}

/** CPU (user + system) a target spent between two of its usage reports, in ms. */
export const cpuMsBetween = (before: Pick<Usage, 'cpu'>, after: Pick<Usage, 'cpu'>): number =>
  (after.cpu.user - before.cpu.user + after.cpu.system - before.cpu.system) / 1000;

/** A positive integer setting from the environment (BENCH_AB_ROUNDS...), or `fallback` when unset. */
export function positiveInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not "${raw}"`);
  return value;
}

/** Child side: the process exits with its parent, and reports a start-up failure instead of hanging it. */
function bindToParent(): void {
  if (!process.send) throw new Error('a bench child must be started by the bench (no IPC channel)');
  process.on('disconnect', () => process.exit(0));
}

/**
 * Child side of a target: starts it, reports its URL, then answers usage and profiling
 * commands until the parent disconnects.
 */
export async function serveTarget(start: () => Promise<string>): Promise<void> {
  bindToParent();
  let profiler: Session | undefined;
  process.on('message', (raw: unknown) => {
    const parsed = Command.safeParse(raw);
    if (!parsed.success) return;
    const command = parsed.data;
    void (async () => {
      try {
        if (command.type === 'usage') {
          if (command.gc) collectGarbage();
          send({ type: 'usage', id: command.id, usage: usageNow() });
        } else if (command.type === 'profile-start') {
          profiler = new Session();
          profiler.connect();
          await profiler.post('Profiler.enable');
          await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
          await profiler.post('Profiler.start');
          send({ type: 'done', id: command.id });
        } else {
          if (!profiler) throw new Error('profile-stop without profile-start');
          const { profile } = await profiler.post('Profiler.stop');
          profiler.disconnect();
          profiler = undefined;
          await writeFile(command.file, JSON.stringify(profile));
          send({ type: 'done', id: command.id });
        }
      } catch (err) {
        send({ type: 'failed', id: command.id, message: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  try {
    send({ type: 'ready', url: await start() });
  } catch (err) {
    send({ type: 'failed', message: `start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` });
    process.exit(1);
  }
}

/** Child side of the memory probe: runs once, reports, exits. */
export async function serveMemoryProbe(run: () => Promise<MemoryProbeResult>): Promise<void> {
  bindToParent();
  try {
    send({ type: 'memory-result', result: await run() });
  } catch (err) {
    send({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
  process.disconnect();
}

/** Full collection; the child must run with --expose-gc. */
export function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
}

/** Parent side: one running child. */
export interface BenchChild {
  readonly process: ChildProcess;
  /** Its URL (targets) once ready. */
  readonly url: string;
  usage(options?: { gc?: boolean }): Promise<Usage>;
  profileStart(): Promise<void>;
  profileStop(file: string): Promise<void>;
  /** Ends the process and waits for it to go; safe to call twice. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills every child still running when the bench exits or is interrupted. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const child of live) child.kill('SIGKILL');
      process.exit(130);
    });
  }
}

const scriptPath = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

function spawnChild(script: string, env: Record<string, string>, execArgv: string[]): ChildProcess {
  installExitHook();
  const child = fork(scriptPath(script), [], {
    execArgv: ['--import', 'tsx', ...execArgv],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Waits for the first message matching `accept`, failing on a `failed` reply or an early exit. */
function nextReply<T>(child: ChildProcess, what: string, accept: (reply: Reply) => T | undefined, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    const onMessage = (raw: unknown) => {
      const parsed = Reply.safeParse(raw);
      if (!parsed.success) return;
      if (parsed.data.type === 'failed') {
        cleanup();
        reject(new Error(`${what}: ${parsed.data.message}`));
        return;
      }
      const value = accept(parsed.data);
      if (value === undefined) return;
      cleanup();
      resolve(value);
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${what}: the child exited (code ${code}, signal ${signal})`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
  await exited;
  clearTimeout(timer);
}

/** Starts `script` (a bench target) in its own process and waits until it listens. */
export async function startTarget(script: string, env: Record<string, string>, execArgv: string[] = []): Promise<BenchChild> {
  const child = spawnChild(script, env, execArgv);
  let nextId = 1;
  const call = <T>(body: CommandBody, accept: (reply: Reply) => T | undefined, timeoutMs = 30_000): Promise<T> => {
    const id = nextId++;
    const pending = nextReply(child, `${script} ${body.type}`, (reply) => ('id' in reply && reply.id === id ? accept(reply) : undefined), timeoutMs);
    child.send({ ...body, id });
    return pending;
  };
  try {
    const url = await nextReply(child, `${script} start`, (reply) => (reply.type === 'ready' ? reply.url : undefined), 60_000);
    return {
      process: child,
      url,
      usage: ({ gc = false } = {}) => call({ type: 'usage', gc }, (reply) => (reply.type === 'usage' ? reply.usage : undefined)),
      profileStart: () => call({ type: 'profile-start' }, (reply) => (reply.type === 'done' ? true : undefined)).then(() => undefined),
      profileStop: (file) => call({ type: 'profile-stop', file }, (reply) => (reply.type === 'done' ? true : undefined)).then(() => undefined),
      stop: () => stopChild(child),
    };
  } catch (err) {
    await stopChild(child);
    throw err;
  }
}

/** Runs the memory probe in its own process (with --expose-gc) and returns what it measured. */
export async function runMemoryProbe(script: string, env: Record<string, string>): Promise<MemoryProbeResult> {
  const child = spawnChild(script, env, ['--expose-gc']);
  try {
    return await nextReply(child, `${script}`, (reply) => (reply.type === 'memory-result' ? reply.result : undefined), 120_000);
  } finally {
    await stopChild(child);
  }
}

/** Pins every thread of `pid` to `cpu` (Linux taskset); false when that cannot be done. */
function pinToCpu(pid: number, cpu: number): boolean {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Pins this process (the load generator and the simulator) to the first CPU and the measured
 * targets to the last, when `taskset` and a second CPU are there: a target then never shares
 * its core with the load, which steadies its CPU per request from round to round. The targets
 * run one at a time, so they never compete with each other. Returns the targets' CPU, or null
 * when nothing was pinned.
 */
export function pinTargets(targets: readonly BenchChild[]): number | null {
  const last = cpus().length - 1;
  const pids = targets.map((t) => t.process.pid);
  if (last < 1 || pids.some((pid) => pid === undefined)) return null;
  // The targets first: the load is moved off their CPU only once they all sit on it.
  if (!pids.every((pid) => pinToCpu(pid!, last))) return null;
  return pinToCpu(process.pid, 0) ? last : null;
}
