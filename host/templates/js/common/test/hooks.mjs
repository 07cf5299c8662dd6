// Module resolution hook (see register.mjs).
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('nuntiq:connector/')) {
    return { url: new URL('./host.js', import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
