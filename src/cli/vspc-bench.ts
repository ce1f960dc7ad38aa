#!/usr/bin/env node
/** `vspc-bench`: benchmark a vspc (its own, or a running deployment with --target/--admin). See docs/performance.md. */
import { benchMain } from '../bench/cli.js';

process.exitCode = await benchMain(process.argv);
