import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/simulator/index.js';
import { UpstreamClient } from '../src/upstream/client.js';
import { StatusStreamHub, type StatusSink } from '../src/upstream/stream-hub.js';
import { json, SEED_REQUEST, startStack, UPSTREAM_TOKEN, upstreamCalls, type Stack } from './helpers.js';

type Status = Record<string, unknown>;

/** Status objects in the `data:` lines of complete server-sent events. */
function parseEvents(text: string): Status[] {
  return text
    .split(/\n\n/)
    .slice(0, -1)
    .flatMap((event) => event.split('\n').filter((l) => l.startsWith('data: ')))
    .map((l) => JSON.parse(l.slice(6)) as Status);
}

/** The states a sequence of snapshots went through, repeats removed. */
const states = (events: Status[]) => events.map((e) => e.status).filter((s, i, all) => s !== all[i - 1]);

/** A real HTTP SSE client that reads only when asked, so a test can stop reading at will. */
class Subscriber {
  events: Status[] = [];
  ended = false;
  private text = '';
  private constructor(
    readonly statusCode: number,
    readonly body: string,
    private readonly chunks: AsyncIterator<Buffer> | undefined,
    private readonly close: () => void,
  ) {}

  static async open(url: string, headers: Record<string, string>): Promise<Subscriber> {
    const res = await request(url, { headers });
    if (res.statusCode !== 200) return new Subscriber(res.statusCode, await res.body.text(), undefined, () => {});
    const iterator = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    return new Subscriber(200, '', iterator, () => res.body.destroy());
  }

  /** Reads until an event satisfies `predicate` (or the stream ends, which fails). */
  async readUntil(predicate: (event: Status) => boolean): Promise<Status> {
    for (;;) {
      const found = this.events.find(predicate);
      if (found) return found;
      if (!(await this.readChunk())) throw new Error(`stream ended without the expected event (HTTP ${this.statusCode} ${this.body}): ${JSON.stringify(this.events)}`);
    }
  }

  async readToEnd(): Promise<Status[]> {
    while (await this.readChunk());
    return this.events;
  }

  leave(): void {
    this.close();
  }

  private async readChunk(): Promise<boolean> {
    if (this.ended || !this.chunks) return false;
    const { value, done } = await this.chunks.next();
    if (done) {
      this.ended = true;
      return false;
    }
    this.text += value.toString('utf8');
    this.events = parseEvents(this.text);
    return true;
  }
}

describe('status stream fan-out (one upstream stream per job)', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 400, runMs: 400, now: clock.now, urlBase: 'https://queue.fal.run', streamPollMs: 10 } });
    stack.sim.app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (!req.url?.includes('/status/stream')) return;
      simOpenStreams.add(res);
      res.once('close', () => simOpenStreams.delete(res));
    });
  });
  afterAll(() => stack.close());

  const submit = async () =>
    ((await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string })
      .request_id;
  const streamUrl = (id: string, logs = true) => `${stack.url}/v1/requests/${id}/status/stream?logs=${logs ? 1 : 0}`;
  const subscribe = (id: string, { logs = true, tenant = 'team-a', host }: { logs?: boolean; tenant?: string; host?: string } = {}) =>
    Subscriber.open(streamUrl(id, logs), { ...stack.bearer(tenant), ...(host ? { host } : {}) });
  const upstreamStreams = (id: string) => stack.sim.requests.filter((r) => r.path.startsWith(`/fal-ai/flux-lora/requests/${id}/status/stream`));
  /** Status-stream responses the simulator is still serving (it sees each one close). */
  const simOpenStreams = new Set<ServerResponse>();
  const until = async (check: () => boolean) => {
    const deadline = Date.now() + 3_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error('condition not reached');
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it('serves 20 concurrent subscribers from one upstream stream, each with its own queue URLs', async () => {
    const id = await submit();
    const subscribers = await Promise.all(Array.from({ length: 20 }, (_, i) => subscribe(id, i === 0 ? { host: 'gateway.example.test:8443' } : {})));
    await Promise.all(subscribers.map((s) => s.readUntil((e) => e.status === 'IN_QUEUE')));
    clock.advance(400);
    await Promise.all(subscribers.map((s) => s.readUntil((e) => e.status === 'IN_PROGRESS')));
    clock.advance(400);
    const all = await Promise.all(subscribers.map((s) => s.readToEnd()));

    expect(upstreamStreams(id)).toHaveLength(1);
    all.forEach((events, i) => {
      expect(states(events)).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
      const origin = i === 0 ? 'http://gateway.example.test:8443' : stack.url;
      for (const event of events) {
        expect(event.status_url).toBe(`${origin}/v1/requests/${id}/status`);
        expect(JSON.stringify(event)).not.toContain('queue.fal.run');
      }
    });
    // Everyone saw the same snapshots.
    expect(all[1]).toEqual(all[19]);
  });

  it('gives a late joiner the latest status first, then follows live to COMPLETED', async () => {
    const id = await submit();
    const first = await subscribe(id);
    await first.readUntil((e) => e.status === 'IN_QUEUE');
    clock.advance(400);
    const latest = await first.readUntil((e) => e.status === 'IN_PROGRESS');

    const late = await subscribe(id);
    await late.readUntil(() => true);
    expect(late.events[0]).toEqual(latest);
    clock.advance(400);
    const events = await late.readToEnd();
    expect(states(events)).toEqual(['IN_PROGRESS', 'COMPLETED']);
    expect((await first.readToEnd()).at(-1)!.status).toBe('COMPLETED');
    expect(upstreamStreams(id)).toHaveLength(1);
  });

  it("gives a late joiner every log line so far in its first status, so fal's clients add up the same logs", async () => {
    const allLogs = (events: Status[]) => events.flatMap((e) => (Array.isArray(e.logs) ? (e.logs as Array<{ message: string }>).map((l) => l.message) : []));
    const id = await submit();
    const first = await subscribe(id);
    let late: Subscriber | undefined;
    try {
      await first.readUntil((e) => e.status === 'IN_QUEUE');
      clock.advance(400);
      await first.readUntil((e) => e.status === 'IN_PROGRESS');
      // The run writes its lines over time (runMs 400: at 0, 40, 120, 200 ms...): step through part of it.
      for (const [ms, lines] of [[0, 1], [50, 2], [100, 3], [100, 4]] as const) {
        clock.advance(ms);
        await first.readUntil(() => allLogs(first.events).length >= lines);
      }
      // Each live event carries only its new lines.
      expect(first.events.filter((e) => e.status === 'IN_PROGRESS' && Array.isArray(e.logs) && e.logs.length > 0).length).toBeGreaterThan(1);

      late = await subscribe(id);
      const caughtUp = await late.readUntil(() => true);
      expect(caughtUp.status).toBe('IN_PROGRESS');
      expect(allLogs([caughtUp])).toEqual(allLogs(first.events));
      clock.advance(400);
      const [lateEvents, firstEvents] = await Promise.all([late.readToEnd(), first.readToEnd()]);
      const polled = (await (await fetch(`${stack.url}/v1/requests/${id}/status?logs=1`, { headers: stack.bearer('team-a') })).json()) as { logs: Array<{ message: string }> };
      const expected = polled.logs.map((l) => l.message);
      expect(expected.length).toBeGreaterThan(3);
      expect(allLogs(firstEvents)).toEqual(expected);
      expect(allLogs(lateEvents)).toEqual(expected);
      expect(upstreamStreams(id)).toHaveLength(1);
    } finally {
      // A failure above must not leave streams open for the next test.
      first.leave();
      late?.leave();
    }
  });

  it('closes the upstream stream when the last subscriber leaves, and opens a fresh one for the next', async () => {
    const id = await submit();
    const subscribers = await Promise.all([subscribe(id), subscribe(id), subscribe(id)]);
    await Promise.all(subscribers.map((s) => s.readUntil((e) => e.status === 'IN_QUEUE')));
    expect(simOpenStreams.size).toBe(1);

    subscribers[0]!.leave();
    subscribers[1]!.leave();
    // One subscriber is still watching: the upstream stream stays, and keeps delivering.
    clock.advance(400);
    await subscribers[2]!.readUntil((e) => e.status === 'IN_PROGRESS');
    expect(simOpenStreams.size).toBe(1);

    subscribers[2]!.leave();
    await until(() => simOpenStreams.size === 0);
    expect(upstreamStreams(id)).toHaveLength(1);

    const next = await subscribe(id);
    await next.readUntil((e) => e.status === 'IN_PROGRESS');
    expect(upstreamStreams(id)).toHaveLength(2);
    clock.advance(400);
    expect(states(await next.readToEnd())).toEqual(['IN_PROGRESS', 'COMPLETED']);
  });

  it('keeps logs=1 and logs=0 on separate upstream streams', async () => {
    const id = await submit();
    const withLogs = await Promise.all([subscribe(id, { logs: true }), subscribe(id, { logs: true })]);
    const without = await Promise.all([subscribe(id, { logs: false }), subscribe(id, { logs: false })]);
    await Promise.all([...withLogs, ...without].map((s) => s.readUntil((e) => e.status === 'IN_QUEUE')));
    clock.advance(400);
    await Promise.all([...withLogs, ...without].map((s) => s.readUntil((e) => e.status === 'IN_PROGRESS')));
    clock.advance(400);
    for (const s of [...withLogs, ...without]) expect((await s.readToEnd()).at(-1)!.status).toBe('COMPLETED');

    expect(upstreamStreams(id).map((r) => r.path.split('?')[1]).sort()).toEqual(['logs=0', 'logs=1']);
    expect(withLogs[0]!.events.some((e) => Array.isArray(e.logs))).toBe(true);
    expect(without[0]!.events.some((e) => 'logs' in e && e.logs !== null)).toBe(false);
  });

  it("does not let another tenant join a job's stream, and asks nothing upstream for it", async () => {
    const id = await submit();
    const owner = await subscribe(id);
    await owner.readUntil((e) => e.status === 'IN_QUEUE');
    const before = upstreamCalls(stack).length;

    const foreign = await subscribe(id, { tenant: 'team-b' });
    expect(foreign.statusCode).toBe(404);
    expect(JSON.parse(foreign.body)).toEqual({ detail: 'Request not found', error_type: 'request_not_found' });
    expect(upstreamCalls(stack)).toHaveLength(before);
    clock.advance(800);
    expect((await owner.readToEnd()).at(-1)!.status).toBe('COMPLETED');
  });

  it('keeps streaming to everyone else while one subscriber stops reading', async () => {
    const id = await submit();
    const [stalled, ...readers] = await Promise.all([subscribe(id), subscribe(id), subscribe(id)]);
    await stalled!.readUntil((e) => e.status === 'IN_QUEUE');
    await Promise.all(readers.map((s) => s.readUntil((e) => e.status === 'IN_QUEUE')));
    // From here on, `stalled` reads nothing.
    clock.advance(400);
    await Promise.all(readers.map((s) => s.readUntil((e) => e.status === 'IN_PROGRESS')));
    clock.advance(400);
    for (const s of readers) expect(states(await s.readToEnd())).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
    expect(upstreamStreams(id)).toHaveLength(1);
    stalled!.leave();
  });
  it('ends every subscriber, and the upstream stream, when the gateway shuts down', async () => {
    const own = await startStack({ sim: { queueMs: 600_000, streamPollMs: 10 } });
    try {
      const upstreamOpen = new Set<ServerResponse>();
      own.sim.app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
        if (!req.url?.includes('/status/stream')) return;
        upstreamOpen.add(res);
        res.once('close', () => upstreamOpen.delete(res));
      });
      const job = (await (await fetch(`${own.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...own.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as {
        request_id: string;
      };
      const url = `${own.url}/v1/requests/${job.request_id}/status/stream`;
      const subscribers = await Promise.all([Subscriber.open(url, own.bearer('team-a')), Subscriber.open(url, own.bearer('team-a'))]);
      await Promise.all(subscribers.map((s) => s.readUntil((e) => e.status === 'IN_QUEUE')));
      expect(upstreamOpen.size).toBe(1);

      await own.app.close();
      // Cut off, not ended cleanly: the job is not done, and a clean end would say it is.
      for (const s of subscribers) await expect(s.readToEnd()).rejects.toThrow();
      expect(subscribers.every((s) => states(s.events).join() === 'IN_QUEUE')).toBe(true);
      await until(() => upstreamOpen.size === 0);
    } finally {
      await own.sim.close();
    }
  });
});

describe('StatusStreamHub against the simulated upstream', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  let dispatcher: Agent;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 400, runMs: 400, now: clock.now, urlBase: 'https://queue.fal.run', streamPollMs: 10 } });
    dispatcher = new Agent();
  });
  afterAll(async () => {
    await dispatcher.close();
    await stack.close();
  });

  const hubWith = (extra: { onStatus?: (id: string, status: Status) => void; maxBufferedBytes?: number } = {}) =>
    new StatusStreamHub({
      upstream: new UpstreamClient({
        baseUrl: stack.sim.url,
        token: UPSTREAM_TOKEN,
        authScheme: 'Key',
        dispatcher,
        maxResponseBytes: 1024 * 1024,
        requestTimeoutMs: 5_000,
        readRetry: { retries: 0, deadlineMs: 1_000, baseDelayMs: 10, maxDelayMs: 10 },
      }),
      maxEventBytes: 1024 * 1024,
      ...extra,
    });
  const submit = async () =>
    ((await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string })
      .request_id;

  /** A sink that keeps what it is sent; `reads` false models a client that never reads (nothing drains). */
  class CollectingSink implements StatusSink {
    text = '';
    ended = false;
    dropped = false;
    private delivered = 0;
    constructor(private readonly reads = true) {}
    get buffered() {
      return this.reads ? 0 : this.text.length - this.delivered;
    }
    write(text: string) {
      this.text += text;
    }
    end() {
      this.ended = true;
    }
    drop() {
      this.dropped = true;
    }
    events() {
      return parseEvents(this.text);
    }
  }

  const attach = async (hub: StatusStreamHub, id: string, sink: StatusSink, base: string) => {
    const joined = await hub.join(id, true, new AbortController().signal);
    if (joined.kind !== 'stream') throw new Error(`expected a stream, got ${joined.kind}`);
    return joined.attach(sink, base);
  };
  const waitFor = async (check: () => boolean) => {
    const deadline = Date.now() + 3_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error('condition not reached');
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('calls onStatus once per upstream event, with the status as upstream sent it, whatever the subscriber count', async () => {
    const id = await submit();
    const observed: Status[] = [];
    const hub = hubWith({ onStatus: (requestId, status) => observed.push({ requestId, ...status }) });
    const sinks = [new CollectingSink(), new CollectingSink(), new CollectingSink()];
    // Where each subscriber's queue URLs point: the jobs on the routes it called.
    const bases = ['https://a.example/v1/requests', 'https://b.example/v1/requests', 'https://a.example/fal-ai/flux-lora/requests'];
    const done = sinks.map((sink, i) => attach(hub, id, sink, bases[i]!));
    await waitFor(() => sinks.every((s) => s.events().length > 0));
    expect(hub.size).toBe(1);
    clock.advance(400);
    await waitFor(() => sinks.every((s) => s.events().some((e) => e.status === 'IN_PROGRESS')));
    clock.advance(400);
    await Promise.all(done);

    expect(hub.size).toBe(0);
    expect(sinks.every((s) => s.ended)).toBe(true);
    const events = sinks[0]!.events();
    expect(states(events)).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
    for (const sink of sinks) expect(sink.events().map((e) => e.status)).toEqual(events.map((e) => e.status));
    expect(observed.map((s) => s.status)).toEqual(events.map((e) => e.status));
    expect(observed.at(-1)!.status).toBe('COMPLETED');
    for (const status of observed) {
      expect(status.requestId).toBe(id);
      expect(status.status_url).toBe(`https://queue.fal.run/fal-ai/flux-lora/requests/${id}/status`);
    }
    sinks.forEach((sink, i) => {
      for (const event of sink.events()) expect(event.status_url).toBe(`${bases[i]}/${id}/status`);
    });
  });

  it('disconnects a subscriber whose unsent bytes pass the bound, and keeps serving the others', async () => {
    const id = await submit();
    // One snapshot is a few hundred bytes: a subscriber that never reads passes this bound at once.
    const hub = hubWith({ maxBufferedBytes: 100 });
    const stalled = new CollectingSink(false);
    const reader = new CollectingSink();
    const readerDone = attach(hub, id, reader, 'https://a.example');
    await waitFor(() => reader.events().length > 0);
    await attach(hub, id, stalled, 'https://a.example');
    expect(stalled.dropped).toBe(true);
    expect(stalled.ended).toBe(false);
    expect(hub.size).toBe(1);

    clock.advance(400);
    await waitFor(() => reader.events().some((e) => e.status === 'IN_PROGRESS'));
    clock.advance(400);
    await readerDone;
    expect(states(reader.events())).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
    expect(reader.ended).toBe(true);
    expect(hub.size).toBe(0);
  });

  it('shares a non-200 upstream answer among everyone who joined while the stream was opening', async () => {
    const hub = hubWith();
    const unknown = '00000000-0000-4000-8000-000000000000';
    const outcomes = await Promise.all([1, 2, 3].map(() => hub.join(unknown, false, new AbortController().signal)));
    for (const outcome of outcomes) {
      expect(outcome.kind).toBe('response');
      if (outcome.kind === 'response') expect(outcome.response.statusCode).toBe(404);
    }
    expect(stack.sim.requests.filter((r) => r.path.includes(`${unknown}/status/stream`))).toHaveLength(1);
    expect(hub.size).toBe(0);
  });
});

describe('status streams a tenant may have open (CLIENT_STREAMS_PER_TENANT)', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    // One upstream stream per tenant, two open streams in all: the second is polled, a third refused.
    stack = await startStack({ env: { STREAMS_PER_TENANT: '1', CLIENT_STREAMS_PER_TENANT: '2' }, sim: { queueMs: 60_000, runMs: 1_000, now: clock.now, streamPollMs: 20 } });
  });
  afterAll(() => stack.close());

  const submit = async (tenant: string) =>
    ((await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string })
      .request_id;
  const subscribe = (id: string, tenant: string) => Subscriber.open(`${stack.url}/v1/requests/${id}/status/stream`, stack.bearer(tenant));

  it('refuses one stream more than the cap with 429 too_many_streams, per tenant, and takes one again once another closed', async () => {
    const [a1, a2, b1] = [await submit('team-a'), await submit('team-a'), await submit('team-b')];
    const first = await subscribe(a1, 'team-a');
    const second = await subscribe(a2, 'team-a');
    await first.readUntil((e) => e.status === 'IN_QUEUE');
    await second.readUntil((e) => e.status === 'IN_QUEUE');

    const refused = await request(`${stack.url}/v1/requests/${a1}/status/stream`, { headers: stack.bearer('team-a') });
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.headers['x-fal-error-type']).toBe('too_many_streams');
    expect(((await refused.body.json()) as { detail: string }).detail).toMatch(/^This tenant has 2 status streams open on this replica/);
    // Another tenant's streams are its own.
    const other = await subscribe(b1, 'team-b');
    expect((await other.readUntil((e) => e.status === 'IN_QUEUE')).request_id).toBe(b1);
    // Polling is never refused for it.
    expect((await fetch(`${stack.url}/v1/requests/${a1}/status`, { headers: stack.bearer('team-a') })).status).toBe(202);

    first.leave();
    const deadline = Date.now() + 3_000;
    let again = await subscribe(a1, 'team-a');
    while (again.statusCode === 429 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      again = await subscribe(a1, 'team-a');
    }
    expect((await again.readUntil((e) => e.status === 'IN_QUEUE')).request_id).toBe(a1);
    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    expect(metrics).toMatch(/fal_gateway_rejections_total\{tenant="team-a",policy="streams"\} [1-9]/);
    for (const s of [second, other, again]) s.leave();
  });
});
