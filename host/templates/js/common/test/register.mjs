// `npm test`: the connector's `nuntiq:connector/…` imports resolve to the
// in-process host double (test/host.js) instead of the component's imports.
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
