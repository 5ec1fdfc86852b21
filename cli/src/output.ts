import { stringify } from 'csv-stringify/sync';

export type Format = 'table' | 'json' | 'csv';

/** Report rows as an aligned text table, JSON (one array), or CSV with a header. */
export function render(rows: ReadonlyArray<Record<string, unknown>>, columns: readonly string[], format: Format): string {
  if (format === 'json') return `${JSON.stringify(rows, null, 2)}\n`;
  const cells = rows.map((row) => columns.map((c) => cell(row[c])));
  // A cell a spreadsheet would take for a formula (=, +, -, @, their full-width forms, a tab or a
  // carriage return first) gets a leading quote.
  if (format === 'csv') return stringify([columns as string[], ...cells], { escape_formulas: true });
  if (rows.length === 0) return '(none)\n';
  const widths = columns.map((c, i) => Math.min(60, Math.max(c.length, ...cells.map((r) => r[i]!.length))));
  const line = (values: readonly string[]) => values.map((v, i) => (v.length > widths[i]! ? `${v.slice(0, widths[i]! - 1)}…` : v.padEnd(widths[i]!))).join('  ').trimEnd();
  return `${[line(columns), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')}\n`;
}

/** One value as a cell: objects as compact JSON, control characters shown as escapes (a terminal never interprets them). */
function cell(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
