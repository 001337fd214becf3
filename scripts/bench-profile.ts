import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/**
 * Reads a V8 CPU profile (.cpuprofile, as written by the inspector's Profiler.stop) and names
 * the functions with the most self time: where the process itself spent its samples.
 */

const CpuProfile = z.object({
  nodes: z.array(
    z.object({
      id: z.number(),
      callFrame: z.object({ functionName: z.string(), url: z.string(), lineNumber: z.number(), columnNumber: z.number() }),
    }),
  ),
  samples: z.array(z.number()),
  timeDeltas: z.array(z.number()),
});

export const HotSpot = z.object({
  functionName: z.string(),
  /** File (and line, except for TypeScript sources), relative to the project. */
  location: z.string(),
  selfMs: z.number(),
  /** Share of the samples that were not idle. */
  percent: z.number(),
});
export type HotSpot = z.infer<typeof HotSpot>;

const root = fileURLToPath(new URL('..', import.meta.url));

function where(url: string, line: number): string {
  if (url === '') return '(native)';
  const path = url.startsWith('file://') ? relative(root, fileURLToPath(url)) : url;
  // tsx compiles each TypeScript file onto one line: its line number says nothing.
  return path.endsWith('.ts') ? path : `${path}:${line + 1}`;
}

/** Entries V8 reports for time outside JavaScript: the collector, the VM itself, idle. */
const isVmEntry = (functionName: string) => functionName.startsWith('(');

/**
 * The `count` functions with the most self time. `javascriptOnly` leaves out native functions
 * and V8's own entries, whose time is often a syscall made on behalf of the caller.
 */
export async function topSelfTime(file: string, count: number, { javascriptOnly = false } = {}): Promise<HotSpot[]> {
  const profile = CpuProfile.parse(JSON.parse(await readFile(file, 'utf8')));
  const byNode = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const selfUs = new Map<string, { functionName: string; location: string; us: number }>();
  let busyUs = 0;
  profile.samples.forEach((nodeId, i) => {
    const frame = byNode.get(nodeId);
    const delta = profile.timeDeltas[i] ?? 0;
    if (!frame || frame.functionName === '(idle)') return;
    busyUs += delta;
    const functionName = frame.functionName || '(anonymous)';
    const location = where(frame.url, frame.lineNumber);
    const key = `${functionName} ${location}`;
    const entry = selfUs.get(key) ?? { functionName, location, us: 0 };
    entry.us += delta;
    selfUs.set(key, entry);
  });
  return [...selfUs.values()]
    .filter((e) => !javascriptOnly || (!isVmEntry(e.functionName) && e.location !== '(native)'))
    .sort((a, b) => b.us - a.us)
    .slice(0, count)
    .map((e) => ({ functionName: e.functionName, location: e.location, selfMs: e.us / 1000, percent: busyUs > 0 ? (100 * e.us) / busyUs : 0 }));
}
