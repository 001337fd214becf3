/** Public API of the simulated fal queue upstream. */
export { buildSimulator, recordedRequests, startSimulator, type Simulator } from './app.js';
export type { RecordedRequest, SimulatorOptions } from './context.js';
export { manualClock, type ManualClock } from './clock.js';
export { renderImage, MAX_RENDER_SIDE, type ImageFormat, type RenderOptions } from './images.js';
export { JobStore, type Job, type JobState, type CancelOutcome, type JobStoreOptions } from './jobs.js';
export type { LogEntry } from './logs.js';
export { validateModelInput, type ValidationDetail } from './validation.js';
