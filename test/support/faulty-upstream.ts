import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type FaultyHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Filled in once the request body has arrived. */
  body: string;
}

export interface FaultyUpstream {
  /** Origin, e.g. http://127.0.0.1:PORT (no trailing slash). */
  url: string;
  /** Every request received, in arrival order (recorded before its body is read). */
  requests: RecordedRequest[];
  /** Replaces the behaviour for the requests that follow. */
  setHandler(handler: FaultyHandler): void;
  /** Stops listening and destroys every open socket, so hung responses never block teardown. */
  close(): Promise<void>;
}

const unset: FaultyHandler = (_req, res) => {
  res.writeHead(599, { 'content-type': 'text/plain' }).end('faulty upstream: no handler set');
};

/** A real HTTP server that plays a misbehaving fal queue, programmable per test. */
export async function startFaultyUpstream(): Promise<FaultyUpstream> {
  let handler = unset;
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    const record: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' };
    requests.push(record);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      record.body = Buffer.concat(chunks).toString('utf8');
      handler(req, res, record.body);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Peers hanging up mid-response are what this server is for: not an error here.
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setHandler: (next) => {
      handler = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
