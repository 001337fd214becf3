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

export function tidyOpenApi<T extends Json>(doc: T): T {
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
