import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/*
 * The gateway's code as the bench loads it: from dist/, as `npm start` and the Docker image run
 * it, compiled by tsc and run by plain Node. (The bench scripts themselves run under tsx, which
 * would otherwise compile src/ on the fly with its own helpers in every function; the bench
 * builds dist/ first.)
 */

/** The URL of one compiled module, e.g. `gatewayModule('app')`; BENCH_DIST: another build's dist/ (npm run bench:ab compares two builds). */
export const gatewayModule = (module: string): string =>
  process.env.BENCH_DIST ? pathToFileURL(resolve(process.env.BENCH_DIST, `${module}.js`)).href : new URL(`../dist/${module}.js`, import.meta.url).href;
