/**
 * The zod provider emits every registered schema twice (as input "XInput" and as output "X").
 * Ours have no transforms, so both are the same: keep only the components the document
 * references and give each its plain name.
 */
type Json = Record<string, unknown>;

function collectRefs(value: unknown, refs: Set<string>): void {
  if (Array.isArray(value)) value.forEach((v) => collectRefs(v, refs));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') refs.add(v.replace('#/components/schemas/', ''));
      else collectRefs(v, refs);
    }
  }
}

function renameRefs(value: unknown, names: Map<string, string>): unknown {
  if (Array.isArray(value)) return value.map((v) => renameRefs(v, names));
  if (!value || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => {
      if (k === '$ref' && typeof v === 'string') {
        const name = v.replace('#/components/schemas/', '');
        return [k, `#/components/schemas/${names.get(name) ?? name}`];
      }
      return [k, renameRefs(v, names)];
    }),
  );
}

/** Whether a schema admits null (zod's `.nullish()` body: a request may come without one). */
const admitsNull = (schema: unknown): boolean =>
  Array.isArray((schema as { anyOf?: unknown } | undefined)?.anyOf) && ((schema as { anyOf: unknown[] }).anyOf.some((s) => (s as { type?: unknown }).type === 'null'));

/**
 * @fastify/swagger marks every request body required. One whose schema admits null in every media
 * type is optional: the route takes a request without a body.
 */
function optionalBodies(paths: Record<string, Record<string, { requestBody?: { required?: boolean; content?: Record<string, { schema?: unknown }> } }>>): void {
  for (const item of Object.values(paths)) {
    for (const operation of Object.values(item)) {
      const body = operation?.requestBody;
      const media = Object.values(body?.content ?? {});
      if (body && media.length > 0 && media.every((m) => admitsNull(m.schema))) body.required = false;
    }
  }
}

export function tidyOpenApi<T extends Json>(doc: T): T {
  if (doc.paths && typeof doc.paths === 'object') optionalBodies(doc.paths as Parameters<typeof optionalBodies>[0]);
  const components = (doc.components ?? {}) as Json;
  const schemas = (components.schemas ?? {}) as Record<string, unknown>;
  const used = new Set<string>();
  collectRefs({ ...doc, components: { ...components, schemas: {} } }, used);
  // Follow references between components until nothing new is found.
  for (let size = -1; size !== used.size; ) {
    size = used.size;
    for (const name of [...used]) collectRefs(schemas[name], used);
  }
  const names = new Map<string, string>();
  for (const name of used) {
    const plain = name.endsWith('Input') ? name.slice(0, -'Input'.length) : name;
    names.set(name, used.has(plain) && plain !== name ? name : plain);
  }
  const kept = Object.fromEntries([...used].sort().map((name) => [names.get(name)!, schemas[name]]));
  return renameRefs({ ...doc, components: { ...components, schemas: kept } }, names) as T;
}
