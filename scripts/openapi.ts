import { writeFile } from 'node:fs/promises';
import { renderOpenApi } from '../src/openapi-document.js';

// npm run openapi: regenerates the committed OpenAPI files (a test fails when they drift).
const { json, yaml } = await renderOpenApi();
await writeFile(new URL('../openapi/openapi.json', import.meta.url), json);
await writeFile(new URL('../openapi/openapi.yaml', import.meta.url), yaml);
process.stdout.write('wrote openapi/openapi.json and openapi/openapi.yaml\n');
