/**
 * Shell completion for vspc-admin: `vspc-admin completion bash|zsh` prints a script made
 * from the program's own commands and options (so it never falls out of step), and the
 * script asks the running vspc for console names through the hidden `__consoles`
 * command (one short admin API call; silent, and nothing offered, when the API cannot
 * be reached).
 */
import type { Command, Option } from 'commander';
import { LOCK_MODES } from '../domain/locks.js';
import { CONSOLE_STATES, type PortView } from '../admin/views.js';

export const SHELLS = ['bash', 'zsh'] as const;
export type Shell = (typeof SHELLS)[number];

/** The hidden command the scripts call for console names. */
export const CONSOLES_COMMAND = '__consoles';

/** Values offered after an option, by its long name. */
const OPTION_VALUES: Record<string, readonly string[]> = { '--mode': LOCK_MODES, '--state': CONSOLE_STATES };

/** The positional arguments that are consoles (`<vm>`), completed from the admin API. */
const CONSOLE_ARGS = new Set(['vm']);

/** Global options that take a value, passed on to `__consoles` (where vspc is, the token). */
const GLOBAL_VALUE_OPTIONS = ['--admin', '--admin-ca', '--token', '--token-file'];

/**
 * Console spellings for a completion: each console's address (the shortest spelling that
 * names it alone: `web01`, `web01:`, `web01:com2`, a UUID), and its port when the
 * prefix is digits; those starting with `prefix` in any case (names are matched in
 * any case), sorted.
 */
export function consoleCandidates(ports: readonly PortView[], prefix: string): string[] {
  const p = prefix.toLowerCase();
  const out = new Set<string>();
  for (const v of ports) {
    const address = v.address ?? `${v.name ?? v.key}${v.label ? `:${v.label}` : ''}`;
    if (address.toLowerCase().startsWith(p)) out.add(address);
    if (/^\d+$/.test(prefix) && String(v.port).startsWith(prefix)) out.add(String(v.port));
  }
  return [...out].sort();
}

interface CommandShape {
  name: string;
  options: string[];
  /** Kind of each positional: `vm`, `shell`, `command`, or the argument's name. */
  args: string[];
}

function longNames(options: readonly Option[]): string[] {
  return options.flatMap((o) => [o.long, o.short].filter((x): x is string => !!x));
}

function shapes(program: Command): { commands: CommandShape[]; globals: string[]; valueOptions: Map<string, 'file' | 'none' | readonly string[]> } {
  const valueOptions = new Map<string, 'file' | 'none' | readonly string[]>();
  const note = (o: Option) => {
    if (!o.long || (!o.required && !o.optional)) return;
    valueOptions.set(o.long, OPTION_VALUES[o.long] ?? (/<file>/.test(o.flags) ? 'file' : 'none'));
  };
  program.options.forEach(note);
  const commands = program.commands
    .filter((c) => !(c as unknown as { _hidden?: boolean })._hidden)
    .map((c) => {
      c.options.forEach(note);
      return { name: c.name(), options: [...longNames(c.options), '--help'], args: c.registeredArguments.map((a) => a.name()) };
    });
  // commander's own `help [command]`.
  if (!commands.some((c) => c.name === 'help')) commands.push({ name: 'help', options: [], args: ['command'] });
  return { commands, globals: [...longNames(program.options), '--help'], valueOptions };
}

const words = (list: readonly string[]) => list.join(' ');

/** The completion script for `shell`. */
export function completionScript(program: Command, shell: Shell): string {
  return shell === 'bash' ? bashScript(program) : zshScript(program);
}

function bashScript(program: Command): string {
  const { commands, globals, valueOptions } = shapes(program);
  const valueCase = [...valueOptions]
    .map(([name, v]) => `      ${name}) ${v === 'file' ? 'COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null' : v === 'none' ? 'COMPREPLY=()' : `COMPREPLY=($(compgen -W '${words(v)}' -- "$cur"))`}; return;;`)
    .join('\n');
  const optionCase = commands.map((c) => `      ${c.name}) opts='${words(c.options)}';;`).join('\n');
  const argCase = commands.map((c) => `      ${c.name}) args=(${words(c.args)});;`).join('\n');
  return `# bash completion for vspc-admin (made by \`vspc-admin completion bash\`).
#   source <(vspc-admin completion bash)                       # this shell
#   vspc-admin completion bash > /etc/bash_completion.d/vspc-admin   # everyone
# Console names come from the running vspc (the --admin and token options on the
# command line are used, and VSPC_ADMIN_TOKEN); nothing is offered when it cannot be reached.
_vspc_admin() {
  local line=\${COMP_LINE:0:COMP_POINT}
  local -a w
  read -r -a w <<< "$line"
  # The word under the cursor, ':' included (COMP_WORDS would split NAME:LABEL at ':').
  local cur=""
  if [[ -n $line && $line != *[[:space:]] ]]; then
    cur=\${w[\${#w[@]}-1]}
    unset 'w[\${#w[@]}-1]'
  fi
  local -a globals=()
  local cmd="" i=1 n=\${#w[@]}
  while (( i < n )); do
    case \${w[i]} in
      ${GLOBAL_VALUE_OPTIONS.join('|')}) globals+=("\${w[i]}" "\${w[i+1]}"); (( i += 2 ));;
      --*=*|--admin-tls) globals+=("\${w[i]}"); (( i++ ));;
      -*) (( i++ ));;
      *) cmd=\${w[i]}; break;;
    esac
  done
  local prev=""
  (( n > 1 )) && prev=\${w[n-1]}
  case $prev in
${valueCase}
  esac
  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '${words(globals)}' -- "$cur"))
    else COMPREPLY=($(compgen -W '${words(commands.map((c) => c.name))}' -- "$cur")); fi
    return
  fi
  local opts="" args=()
  case $cmd in
${optionCase}
  esac
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); return; fi
  case $cmd in
${argCase}
  esac
  # Which positional the cursor is on: words after the command that are not options or their values.
  local pos=0 j
  for (( j = i + 1; j < n; j++ )); do
    case \${w[j]} in
      -*=*) ;;
      -*) [[ " ${words([...valueOptions.keys()])} " == *" \${w[j]} "* ]] && (( j++ ));;
      *) (( pos++ ));;
    esac
  done
  case \${args[pos]} in
    vm)
      local IFS=$'\\n'
      COMPREPLY=($("\${COMP_WORDS[0]}" "\${globals[@]}" ${CONSOLES_COMMAND} -- "$cur" 2>/dev/null))
      # bash replaces only what follows the last ':' (it is in COMP_WORDBREAKS).
      if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local keep=\${cur%:*}: k
        for k in "\${!COMPREPLY[@]}"; do COMPREPLY[k]=\${COMPREPLY[k]#"$keep"}; done
      fi;;
    name)
      # console: names from the broker (no admin API needed; VSPC_BROKER_SOCKET or the default socket).
      local IFS=$'\n'
      COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" console --names 2>/dev/null)" -- "$cur"))
      if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local keep=\${cur%:*}: k
        for k in "\${!COMPREPLY[@]}"; do COMPREPLY[k]=\${COMPREPLY[k]#"$keep"}; done
      fi;;
    shell) COMPREPLY=($(compgen -W '${SHELLS.join(' ')}' -- "$cur"));;
    command) COMPREPLY=($(compgen -W '${words(commands.map((c) => c.name))}' -- "$cur"));;
    *) COMPREPLY=();;
  esac
}
complete -F _vspc_admin vspc-admin
`;
}

function zshScript(program: Command): string {
  const { commands, globals, valueOptions } = shapes(program);
  const valueCase = [...valueOptions]
    .map(([name, v]) => `    ${name}) ${v === 'file' ? '_files' : v === 'none' ? ':' : `compadd -- ${words(v)}`}; return;;`)
    .join('\n');
  const optionCase = commands.map((c) => `    ${c.name}) opts=(${words(c.options)});;`).join('\n');
  const argCase = commands.map((c) => `    ${c.name}) args=(${words(c.args)});;`).join('\n');
  return `#compdef vspc-admin
# zsh completion for vspc-admin (made by \`vspc-admin completion zsh\`).
#   source <(vspc-admin completion zsh)        # this shell (after compinit)
#   vspc-admin completion zsh > "\${fpath[1]}/_vspc-admin"   # every shell
# Console names come from the running vspc (the --admin and token options on the
# command line are used, and VSPC_ADMIN_TOKEN); nothing is offered when it cannot be reached.
_vspc_admin() {
  local -a globals opts args consoles
  local cmd="" i=2
  while (( i < CURRENT )); do
    case \${words[i]} in
      ${GLOBAL_VALUE_OPTIONS.join('|')}) globals+=("\${words[i]}" "\${words[i+1]}"); (( i += 2 ));;
      --*=*|--admin-tls) globals+=("\${words[i]}"); (( i++ ));;
      -*) (( i++ ));;
      *) cmd=\${words[i]}; break;;
    esac
  done
  local cur=\${words[CURRENT]} prev=\${words[CURRENT-1]}
  case $prev in
${valueCase}
  esac
  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then compadd -- ${words(globals)}
    else compadd -- ${words(commands.map((c) => c.name))}; fi
    return
  fi
  case $cmd in
${optionCase}
  esac
  if [[ $cur == -* ]]; then compadd -- $opts; return; fi
  case $cmd in
${argCase}
  esac
  local pos=1 j
  for (( j = i + 1; j < CURRENT; j++ )); do
    case \${words[j]} in
      -*=*) ;;
      -*) [[ " ${words([...valueOptions.keys()])} " == *" \${words[j]} "* ]] && (( j++ ));;
      *) (( pos++ ));;
    esac
  done
  case \${args[pos]} in
    vm)
      consoles=("\${(@f)$(\${words[1]} "\${globals[@]}" ${CONSOLES_COMMAND} -- "$cur" 2>/dev/null)}")
      (( \${#consoles} )) && [[ -n \${consoles[1]} ]] && compadd -U -- "\${consoles[@]}";;
    name)
      consoles=("\${(@f)$(\${words[1]} console --names 2>/dev/null)}")
      (( \${#consoles} )) && [[ -n \${consoles[1]} ]] && compadd -- "\${consoles[@]}";;
    shell) compadd -- ${SHELLS.join(' ')};;
    command) compadd -- ${words(commands.map((c) => c.name))};;
  esac
}
# Autoloaded from $fpath (as _vspc-admin): complete now; sourced: register.
if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then _vspc_admin "$@"
elif (( $+functions[compdef] )); then compdef _vspc_admin vspc-admin; fi
`;
}
