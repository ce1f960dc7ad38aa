/**
 * `npm run bench`: the benchmark against a vspc it starts itself (5,000 VM serial ports
 * by default; `npm run bench -- --help` lists the options). Same as `vspc-bench`.
 */
import { benchMain } from './cli.js';

process.exitCode = await benchMain(process.argv, 'npm run bench --');
