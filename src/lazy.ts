/**
 * `make()` on the first call, its result on every call after. For what a module would build at
 * load and only some uses need, such as zod schemas: building one costs as much as a short CLI
 * command's own work, so a command that never validates a job request does not build its schema.
 */
export function lazy<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}
