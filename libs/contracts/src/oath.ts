import { z } from 'zod';
import { IsoDateTime, OathAlgorithm, ObjectName, OtpCode, safeText, TenantId, UserId } from './primitives.js';

/**
 * Hardware OATH tokens (docs/api.md, "Hardware OATH tokens"): import jobs from CSV or PSKC
 * (RFC 6030) files, the tenant's token inventory, assignment to users and activation by the code
 * a token displays.
 */

/** The JetStream object store of import files too large for one request, and of the jobs' error files. */
export const IMPORTS_BUCKET = 'MFA_IMPORTS';
/** Seconds an upload, an error file or a finished job is kept. */
export const IMPORT_RETENTION_SECONDS = 7 * 24 * 3600;
/**
 * Largest `oath.import` request (the file inline): NATS's default max_payload is 1 MiB, and the
 * request needs a little room for its other fields and headers. Larger files go through the
 * object store.
 */
export const MAX_IMPORT_REQUEST_BYTES = 1000 * 1024;
/** Largest file an import takes through the object store (200,000 PSKC key packages fit with room to spare). */
export const MAX_IMPORT_FILE_BYTES = 256 * 1024 * 1024;
/** The CSV header a file must start with (the seeds'); manufacturer and model may be left out. */
export const OATH_CSV_HEADER = 'upn,serial number,secret key,time interval,manufacturer,model';
/** The error file's header: field names differ from the upload's on purpose (the seeds), so it cannot be re-imported by mistake. */
export const OATH_ERRORS_CSV_HEADER = 'row,user,serial,failure reason';
/** `errorsCsv` carries the error file inline up to this size; the whole file is always in `errorsObject`. */
export const MAX_INLINE_ERRORS_BYTES = 256 * 1024;

export const SerialNumber = safeText(64);

export const OathImportFormat = z.enum(['csv', 'pskc']);
export type OathImportFormat = z.infer<typeof OathImportFormat>;

export const OathImportRequest = z
  .object({
    tenantId: TenantId,
    format: OathImportFormat,
    /** The file itself: text (CSV, XML) or base64 with `encoding: "base64"`. */
    content: z.string().min(1, 'must not be empty').max(MAX_IMPORT_REQUEST_BYTES).optional(),
    encoding: z.literal('base64').optional(),
    /** Instead of `content`: the file's name in MFA_IMPORTS, `<tenantId>/` and anything after. */
    object: ObjectName.optional(),
    /** PSKC keys encrypted with a password (PBKDF2). */
    password: z.string().min(1).max(256).optional(),
    /** PSKC keys encrypted with a pre-shared AES key (hex: 16, 24 or 32 bytes). */
    psk: z
      .string()
      .regex(/^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64})$/, 'must be an AES key in hex (32, 48 or 64 digits)')
      .optional(),
    /** A serial number already in the inventory is replaced (its old token revoked) instead of refused. */
    replace: z.boolean().optional(),
  })
  .refine((r) => (r.content === undefined) !== (r.object === undefined), { message: 'give either content or object', path: ['content'] })
  .refine((r) => r.object === undefined || r.object.startsWith(`${r.tenantId}/`), { message: 'must start with the tenant id and a slash', path: ['object'] })
  .refine((r) => r.encoding === undefined || r.content !== undefined, { message: 'only with content', path: ['encoding'] })
  .refine((r) => r.format === 'pskc' || (r.password === undefined && r.psk === undefined), { message: 'only for pskc files', path: ['password'] })
  .refine((r) => r.password === undefined || r.psk === undefined, { message: 'give password or psk, not both', path: ['psk'] });
export type OathImportRequest = z.infer<typeof OathImportRequest>;
export const OathImportReply = z.object({ jobId: z.string() });
export type OathImportReply = z.infer<typeof OathImportReply>;

export const OathJobId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be a job id');
export const OathImportStatusRequest = z.object({ tenantId: TenantId, jobId: OathJobId });
export type OathImportStatusRequest = z.infer<typeof OathImportStatusRequest>;
export const OathImportState = z.enum(['queued', 'running', 'completed', 'failed']);
export const OathImportStatusReply = z.object({
  jobId: z.string(),
  format: OathImportFormat,
  state: OathImportState,
  /** Tokens in the file (known once the file was read; 0 before). */
  total: z.number(),
  processed: z.number(),
  imported: z.number(),
  failed: z.number(),
  /**
   * Why a `failed` job could not read its file (wrong password, not a PSKC file...). Not named
   * `error`: a reply's `error` is always the error object of a refused request.
   */
  reason: z.string().optional(),
  /** The rejected rows, `row,user,serial,failure reason` (OATH_ERRORS_CSV_HEADER), when some failed. */
  errorsCsv: z.string().optional(),
  /** True when errorsCsv was cut at MAX_INLINE_ERRORS_BYTES: read errorsObject for all of it. */
  errorsTruncated: z.boolean().optional(),
  /** The whole error file in MFA_IMPORTS (once the job ended). */
  errorsObject: z.string().optional(),
  createdAt: IsoDateTime,
  updatedAt: IsoDateTime,
  finishedAt: IsoDateTime.optional(),
});
export type OathImportStatusReply = z.infer<typeof OathImportStatusReply>;

/** In the inventory: waiting for a user, given to one (awaiting its first code), or activated. */
export const OATH_TOKEN_STATES = ['unassigned', 'assigned', 'active'] as const;
export const OathTokenState = z.enum(OATH_TOKEN_STATES);
export type OathTokenState = z.infer<typeof OathTokenState>;

export const OathTokensListRequest = z.object({
  tenantId: TenantId,
  state: OathTokenState.optional(),
  limit: z.int().min(1).max(500).default(50),
  cursor: z.string().min(1).max(512).optional(),
});
export type OathTokensListRequest = z.infer<typeof OathTokensListRequest>;
export const OathTokenItem = z.object({
  serialNumber: z.string(),
  tokenId: z.string(),
  state: OathTokenState,
  userId: z.string().optional(),
  manufacturer: z.string().optional(),
  model: z.string().optional(),
  algorithm: OathAlgorithm,
  digits: z.number(),
  period: z.number(),
  importedAt: IsoDateTime,
  activatedAt: IsoDateTime.optional(),
});
export type OathTokenItem = z.infer<typeof OathTokenItem>;
export const OathTokensListReply = z.object({ items: z.array(OathTokenItem), nextCursor: z.string().optional() });
export type OathTokensListReply = z.infer<typeof OathTokensListReply>;

export const OathTokensAssignRequest = z.object({ tenantId: TenantId, serialNumber: SerialNumber, userId: UserId });
export type OathTokensAssignRequest = z.infer<typeof OathTokensAssignRequest>;
export const OathTokensAssignReply = z.object({ serialNumber: z.string(), tokenId: z.string(), userId: z.string(), state: OathTokenState });
export type OathTokensAssignReply = z.infer<typeof OathTokensAssignReply>;

export const OathTokensActivateRequest = z.object({ tenantId: TenantId, serialNumber: SerialNumber, code: OtpCode });
export type OathTokensActivateRequest = z.infer<typeof OathTokensActivateRequest>;
export const OathTokensActivateReply = z.object({ serialNumber: z.string(), tokenId: z.string(), userId: z.string(), active: z.boolean() });
export type OathTokensActivateReply = z.infer<typeof OathTokensActivateReply>;
