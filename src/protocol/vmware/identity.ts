import { ProtocolError } from '../../errors.js';
import { normalizeUuid } from '../../util/uuid.js';
import { hasUnsafeText, MAX_NAME_LENGTH, sanitizeText, truncateText } from '../../util/text.js';

/** Bounds on identity text from a VM: real values are far smaller; larger is hostile (a longer VM-NAME is a protocol error; one of up to 1024 bytes is kept cut to MAX_NAME_LENGTH characters). */
export const MAX_NAME_BYTES = 1024;
export const MAX_URI_BYTES = 1024;
export const MAX_UUID_TEXT_BYTES = 128;
export const MAX_LABEL_LENGTH = 64;


export function parseUuidPayload(payload: Buffer): string {
  if (payload.length > MAX_UUID_TEXT_BYTES) {
    throw new ProtocolError('VSPC_BAD_UUID', `VM-VC-UUID of ${payload.length} bytes is too long`, { length: payload.length });
  }
  const text = payload.toString('latin1');
  const uuid = normalizeUuid(text);
  if (!uuid) throw new ProtocolError('VSPC_BAD_UUID', 'VM-VC-UUID is not 32 hex digits', { text: JSON.stringify(sanitizeText(text.slice(0, 128))) });
  return uuid;
}

export function parseNamePayload(payload: Buffer): string {
  if (payload.length > MAX_NAME_BYTES) {
    throw new ProtocolError('VSPC_BAD_NAME', `VM-NAME of ${payload.length} bytes exceeds ${MAX_NAME_BYTES}`, {
      length: payload.length,
    });
  }
  // Controls (C0 and C1) and invisible formatting (bidi overrides) in a name would reach
  // operators' terminals through tables and logs: replace them (src/util/text.ts). VMware
  // names have at most 80 characters: past MAX_NAME_LENGTH (256) the name is cut, marked
  // with '…' — every list, table and pattern pays for each character of every name.
  return truncateText(sanitizeText(payload.toString('utf8')), MAX_NAME_LENGTH);
}

export interface ProxyRequest {
  direction: string;
  /** The full service URI as sent, e.g. "vSPC.py?port=com2". */
  uri: string;
  /** The part before "?". */
  service: string;
  /** The serial port label from `?port=`; '' when absent. */
  label: string;
}

export function parseDoProxyPayload(payload: Buffer): ProxyRequest {
  if (payload.length < 1) throw new ProtocolError('VSPC_BAD_DO_PROXY', 'DO-PROXY without a direction byte');
  if (payload.length > MAX_URI_BYTES + 1) {
    throw new ProtocolError('VSPC_BAD_DO_PROXY', `DO-PROXY of ${payload.length} bytes is too long`, { length: payload.length });
  }
  const direction = String.fromCharCode(payload[0]);
  const uri = payload.subarray(1).toString('utf8');
  const q = uri.indexOf('?');
  const service = q < 0 ? uri : uri.slice(0, q);
  let label = '';
  if (q >= 0) {
    const params = new URLSearchParams(uri.slice(q + 1));
    label = params.get('port') ?? '';
  }
  // The label is part of the console's identity: refused, not rewritten, when unsafe.
  if (label.length > MAX_LABEL_LENGTH || hasUnsafeText(label)) {
    throw new ProtocolError('VSPC_BAD_DO_PROXY', 'DO-PROXY port label is too long or has control characters', {
      label: JSON.stringify(label.slice(0, 80)),
    });
  }
  // The direction and the URI end up in log lines (a refused service is logged): rewritten
  // where unsafe (after the label was checked on the original); such a URI never names our
  // service anyway.
  return { direction: sanitizeText(direction), uri: sanitizeText(uri), service: sanitizeText(service), label };
}
