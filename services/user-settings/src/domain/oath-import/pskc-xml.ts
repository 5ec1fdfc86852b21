/**
 * Reads a PSKC file (RFC 6030) as a stream of XML events and hands over, per KeyPackage, the few
 * values the import needs, so a file of 100,000 keys never sits in memory as a tree. What the
 * values mean is pskc.ts's business; this file only finds them, by namespace URI rather than
 * prefix, and keeps the file from costing more memory than a few of its KeyPackages.
 *
 * Hostile XML: a file with a DOCTYPE is refused outright (saxes expands no entity declared in
 * one, but nothing a token file needs is in a DOCTYPE, and refusing it shuts out entity tricks
 * altogether); a text, or an attribute value read, longer than MAX_XML_TEXT fails the file, and
 * so does anything saxes would have to keep whole for longer than MAX_SILENT (a comment, a tag
 * with its attributes), or nesting deeper than MAX_XML_DEPTH.
 */
import { SaxesParser, type SaxesTagNS } from 'saxes';
import { ImportFileError, MAX_IMPORT_TOKENS } from './types.js';

/** Longest text (element content, attribute value) read, in characters. */
export const MAX_XML_TEXT = 64 * 1024;
/** Deepest element nesting read; a PSKC file needs about ten levels. */
export const MAX_XML_DEPTH = 32;
/** Characters handed to saxes at a time, so the size checks run between bounded steps. */
const WRITE_SLICE = 16 * 1024;
/**
 * saxes keeps a text, comment, tag or attribute list whole until it ends, and reports nothing
 * meanwhile. A file that goes this many characters without any report is building one of those
 * beyond MAX_XML_TEXT, and is stopped before it grows further.
 */
const MAX_SILENT = 2 * MAX_XML_TEXT;

/**
 * Short names for the namespaces read, by URI; an element of any other namespace is skipped with
 * everything inside it. PBKDF2's parameters come in either of two namespaces: RFC 6030 figure 7
 * puts them in PKCS #5's, XML Encryption 1.1 (and python-pskc) in its own; both read as `kdf`.
 */
const PREFIXES = new Map([
  ['urn:ietf:params:xml:ns:keyprov:pskc', 'pskc'],
  ['http://www.w3.org/2001/04/xmlenc#', 'xenc'],
  ['http://www.w3.org/2000/09/xmldsig#', 'ds'],
  ['http://www.w3.org/2009/xmlenc11#', 'kdf'],
  ['http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#', 'kdf'],
]);

/** What to keep of an element at a path: its text, some attributes (values under `path@name`). Its presence is always kept. */
interface Wanted {
  text?: boolean;
  attributes?: readonly string[];
}

/** Paths below KeyContainer: how the file's keys are protected. */
export const HEADER = {
  encryptionKey: 'pskc:EncryptionKey',
  keyName: 'pskc:EncryptionKey/ds:KeyName',
  derivedKey: 'pskc:EncryptionKey/kdf:DerivedKey',
  derivation: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod',
  pbkdf2: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod/kdf:PBKDF2-params',
  salt: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod/kdf:PBKDF2-params/kdf:Salt/kdf:Specified',
  iterations: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod/kdf:PBKDF2-params/kdf:IterationCount',
  keyLength: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod/kdf:PBKDF2-params/kdf:KeyLength',
  prf: 'pskc:EncryptionKey/kdf:DerivedKey/kdf:KeyDerivationMethod/kdf:PBKDF2-params/kdf:PRF',
  macMethod: 'pskc:MACMethod',
  macKey: 'pskc:MACMethod/pskc:MACKey',
  macKeyMethod: 'pskc:MACMethod/pskc:MACKey/xenc:EncryptionMethod',
  macKeyCipher: 'pskc:MACMethod/pskc:MACKey/xenc:CipherData/xenc:CipherValue',
} as const;

/** The paths of a value (RFC 6030 §4.2: PlainValue, or EncryptedValue with its ValueMAC) under `pskc:Key/pskc:Data/`. */
function valuePaths(name: 'Secret' | 'Time' | 'TimeInterval') {
  const base = `pskc:Key/pskc:Data/pskc:${name}`;
  return {
    element: base,
    plain: `${base}/pskc:PlainValue`,
    encrypted: `${base}/pskc:EncryptedValue`,
    method: `${base}/pskc:EncryptedValue/xenc:EncryptionMethod`,
    cipher: `${base}/pskc:EncryptedValue/xenc:CipherData/xenc:CipherValue`,
    mac: `${base}/pskc:ValueMAC`,
  };
}

/** Paths below KeyPackage: the device and its key. */
export const PACKAGE = {
  manufacturer: 'pskc:DeviceInfo/pskc:Manufacturer',
  serialNo: 'pskc:DeviceInfo/pskc:SerialNo',
  model: 'pskc:DeviceInfo/pskc:Model',
  deviceExpiry: 'pskc:DeviceInfo/pskc:ExpiryDate',
  key: 'pskc:Key',
  suite: 'pskc:Key/pskc:AlgorithmParameters/pskc:Suite',
  responseFormat: 'pskc:Key/pskc:AlgorithmParameters/pskc:ResponseFormat',
  keyExpiry: 'pskc:Key/pskc:Policy/pskc:ExpiryDate',
  secret: valuePaths('Secret'),
  time: valuePaths('Time'),
  timeInterval: valuePaths('TimeInterval'),
} as const;

function valueWanted(paths: ReturnType<typeof valuePaths>): Array<[string, Wanted]> {
  return [
    [paths.element, {}],
    [paths.plain, { text: true }],
    [paths.encrypted, {}],
    [paths.method, { attributes: ['Algorithm'] }],
    [paths.cipher, { text: true }],
    [paths.mac, { text: true }],
  ];
}

const HEADER_WANTED = new Map<string, Wanted>([
  [HEADER.encryptionKey, {}],
  [HEADER.keyName, { text: true }],
  [HEADER.derivedKey, {}],
  [HEADER.derivation, { attributes: ['Algorithm'] }],
  [HEADER.pbkdf2, {}],
  [HEADER.salt, { text: true }],
  [HEADER.iterations, { text: true }],
  [HEADER.keyLength, { text: true }],
  // RFC 6030 and XML Encryption 1.1 name the PRF in an attribute; python-pskc writes it as text.
  [HEADER.prf, { text: true, attributes: ['Algorithm'] }],
  [HEADER.macMethod, { attributes: ['Algorithm'] }],
  [HEADER.macKey, {}],
  [HEADER.macKeyMethod, { attributes: ['Algorithm'] }],
  [HEADER.macKeyCipher, { text: true }],
]);

const PACKAGE_WANTED = new Map<string, Wanted>([
  [PACKAGE.manufacturer, { text: true }],
  [PACKAGE.serialNo, { text: true }],
  [PACKAGE.model, { text: true }],
  [PACKAGE.deviceExpiry, { text: true }],
  [PACKAGE.key, { attributes: ['Id', 'Algorithm'] }],
  [PACKAGE.suite, { text: true }],
  [PACKAGE.responseFormat, { attributes: ['Length', 'Encoding', 'CheckDigits'] }],
  [PACKAGE.keyExpiry, { text: true }],
  ...valueWanted(PACKAGE.secret),
  ...valueWanted(PACKAGE.time),
  ...valueWanted(PACKAGE.timeInterval),
]);

/** The values found under one element (KeyContainer's header or a KeyPackage), by path; `repeated` is the first path found twice. */
export interface Found {
  values: Map<string, string>;
  repeated?: string;
}

export interface RawPackage extends Found {
  /** 1-based position of the KeyPackage in the file. */
  row: number;
}

/**
 * The wanted paths as a tree, so that an element is matched by one lookup in its parent's node
 * and elements leading nowhere wanted cost nothing further (no path strings built per element).
 */
interface PathNode {
  /** Short name of the element's namespace. */
  prefix: string;
  path: string;
  wanted: Wanted | undefined;
  /** By local name (no two wanted children share one). */
  children: Map<string, PathNode>;
}

function pathTree(prefix: string, wanted: ReadonlyMap<string, Wanted>): PathNode {
  const root: PathNode = { prefix, path: '', wanted: undefined, children: new Map() };
  for (const [path, spec] of wanted) {
    let node = root;
    for (const step of path.split('/')) {
      const [stepPrefix, local] = step.split(':') as [string, string];
      let child = node.children.get(local);
      if (child === undefined) {
        child = { prefix: stepPrefix, path: node.path === '' ? step : `${node.path}/${step}`, wanted: undefined, children: new Map() };
        node.children.set(local, child);
      }
      node = child;
    }
    node.wanted = spec;
  }
  return root;
}

/** The header's tree, rooted at KeyContainer. */
const HEADER_TREE = pathTree('pskc', HEADER_WANTED);
/** A KeyPackage's tree, rooted at the KeyPackage. */
const PACKAGE_TREE = pathTree('pskc', PACKAGE_WANTED);

/**
 * The short name of an element's namespace. Inside a `kdf` element, a child without a namespace
 * or in PSKC's counts as `kdf` too: RFC 6030 figure 7 and python-pskc write PBKDF2's parameters
 * unqualified, which a file with PSKC as its default namespace turns into PSKC's.
 */
function prefixOf(uri: string, parentPrefix: string): string | undefined {
  const prefix = PREFIXES.get(uri);
  if (parentPrefix === 'kdf' && (uri === '' || prefix === 'pskc')) return 'kdf';
  return prefix;
}

/** The child of `node` the element is, if it is on a wanted path. */
function childOf(node: PathNode | undefined, tag: SaxesTagNS): PathNode | undefined {
  const child = node?.children.get(tag.local);
  return child !== undefined && child.prefix === prefixOf(tag.uri, node!.prefix) ? child : undefined;
}

/** An open element: where it is in the wanted paths (undefined: nowhere wanted), and what it belongs to. */
interface Frame {
  node: PathNode | undefined;
  scope: Found | undefined;
}

/** A path as an administrator reads it: Key/Data/Secret. */
export const describePath = (path: string): string => path.replace(/(^|\/)[a-z?]+:/g, '$1');

const tooLong = (what: string) => new ImportFileError(`the file has ${what} longer than ${MAX_XML_TEXT} characters`);

/** Feeds a PSKC file's bytes through saxes and collects its header and KeyPackages. */
export class PskcReader {
  /** KeyContainer's header (EncryptionKey, MACMethod); complete once the first KeyPackage starts. */
  readonly header: Found = { values: new Map() };
  private readonly parser = new SaxesParser({ xmlns: true });
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });
  private readonly stack: Frame[] = [];
  private readonly ready: RawPackage[] = [];
  private current: RawPackage | undefined;
  private packages = 0;
  private capture: { depth: number; path: string; text: string; scope: Found } | undefined;
  private silent = 0;
  private reported = false;

  constructor() {
    // Five handlers, no more: saxes stores each one as a new property of the parser, and from
    // about seven on V8 gives the parser slow (dictionary) properties, which makes parsing four
    // to five times slower. Errors come out of write() instead (below), the XML declaration is
    // read from parser.xmlDecl, and comments and processing instructions are left to the
    // MAX_SILENT bound.
    const p = this.parser;
    p.on('doctype', () => {
      throw new ImportFileError('the file has a DOCTYPE (document type declaration); PSKC files need none, and they are refused');
    });
    p.on('opentag', (tag) => this.open(tag));
    p.on('closetag', () => this.close());
    p.on('text', (text) => this.text(text));
    p.on('cdata', (text) => this.text(text));
  }

  /** Reads the next bytes of the file; the KeyPackages they complete are then in `drain()`. */
  write(chunk: Buffer): void {
    let text: string;
    try {
      text = this.utf8.decode(chunk, { stream: true });
    } catch {
      throw new ImportFileError('the file is not UTF-8 text');
    }
    this.feed(text);
  }

  /** The end of the file. */
  end(): void {
    let rest: string;
    try {
      rest = this.utf8.decode();
    } catch {
      throw new ImportFileError('the file is not UTF-8 text (it ends inside a character)');
    }
    this.feed(rest);
    this.toSaxes(null);
  }

  /** The KeyPackages read completely since the last call, in file order. */
  drain(): RawPackage[] {
    return this.ready.splice(0, this.ready.length);
  }

  private feed(text: string): void {
    for (let at = 0; at < text.length; at += WRITE_SLICE) {
      const slice = text.slice(at, at + WRITE_SLICE);
      this.reported = false;
      this.toSaxes(slice);
      // After a report, at most the rest of this slice waits unreported; without one, all of it adds up.
      this.silent = this.reported ? slice.length : this.silent + slice.length;
      if (this.silent > MAX_SILENT) throw tooLong('a text, comment or tag');
    }
  }

  /** Writes to saxes (null: the end); saxes throws a plain Error at the first well-formedness error. */
  private toSaxes(text: string | null): void {
    try {
      if (text === null) this.parser.close();
      else this.parser.write(text);
    } catch (error) {
      if (error instanceof ImportFileError) throw error;
      throw new ImportFileError(`not well-formed XML: ${(error as Error).message}`);
    }
  }

  private open(tag: SaxesTagNS): void {
    this.reported = true;
    const depth = this.stack.length + 1;
    if (depth > MAX_XML_DEPTH) throw new ImportFileError(`the file nests elements deeper than ${MAX_XML_DEPTH} levels`);
    const parent = this.stack[depth - 2];
    if (parent === undefined) return this.openRoot(tag);
    if (depth === 2) return this.openTop(tag);
    const node = childOf(parent.node, tag);
    this.stack.push({ node, scope: parent.scope });
    if (node?.wanted !== undefined && parent.scope !== undefined) this.keep(node, node.wanted, parent.scope, tag, depth);
  }

  private openRoot(tag: SaxesTagNS): void {
    const encoding = this.parser.xmlDecl.encoding?.toLowerCase();
    if (encoding !== undefined && encoding !== 'utf-8' && encoding !== 'utf8' && encoding !== 'us-ascii') throw new ImportFileError('the file must be UTF-8');
    if (PREFIXES.get(tag.uri) !== 'pskc' || tag.local !== 'KeyContainer') {
      throw new ImportFileError('not a PSKC file: the root element is not KeyContainer (urn:ietf:params:xml:ns:keyprov:pskc)');
    }
    let version: string | undefined;
    for (const name in tag.attributes) {
      const attr = tag.attributes[name]!;
      if (attr.uri === '' && attr.local === 'Version') version = attr.value;
    }
    if (version !== '1.0') throw new ImportFileError('not a PSKC 1.0 file: KeyContainer Version must be "1.0"');
    this.stack.push({ node: HEADER_TREE, scope: undefined });
  }

  /** A child of KeyContainer: a KeyPackage, or part of the header (which must come first). */
  private openTop(tag: SaxesTagNS): void {
    const pskc = PREFIXES.get(tag.uri) === 'pskc';
    if (pskc && tag.local === 'KeyPackage') {
      if (++this.packages > MAX_IMPORT_TOKENS) throw new ImportFileError(`the file has more than ${MAX_IMPORT_TOKENS} KeyPackages; split it into several imports`);
      this.current = { row: this.packages, values: new Map() };
      this.stack.push({ node: PACKAGE_TREE, scope: this.current });
      return;
    }
    if (pskc && this.packages > 0 && (tag.local === 'EncryptionKey' || tag.local === 'MACMethod')) {
      throw new ImportFileError(`${tag.local} must come before the first KeyPackage`);
    }
    const node = childOf(HEADER_TREE, tag);
    this.stack.push({ node, scope: this.header });
    if (node?.wanted !== undefined) this.keep(node, node.wanted, this.header, tag, 2);
  }

  /** Records a wanted element and the attributes wanted of it, and starts collecting its text if that is wanted. */
  private keep(node: PathNode, wanted: Wanted, scope: Found, tag: SaxesTagNS, depth: number): void {
    const path = node.path;
    if (scope.values.has(path)) scope.repeated ??= path;
    scope.values.set(path, '');
    const names = wanted.attributes;
    if (names !== undefined) {
      for (const key in tag.attributes) {
        const attr = tag.attributes[key]!;
        if (attr.uri !== '' || !names.includes(attr.local)) continue;
        if (attr.value.length > MAX_XML_TEXT) throw tooLong('an attribute value');
        scope.values.set(`${path}@${attr.local}`, attr.value);
      }
    }
    if (wanted.text) this.capture = { depth, path, text: '', scope };
  }

  private close(): void {
    this.reported = true;
    const depth = this.stack.length;
    const frame = this.stack.pop();
    if (this.capture !== undefined && this.capture.depth === depth) {
      this.capture.scope.values.set(this.capture.path, this.capture.text);
      this.capture = undefined;
    }
    if (depth === 2 && this.current !== undefined && frame?.scope === this.current) {
      this.ready.push(this.current);
      this.current = undefined;
    }
  }

  private text(text: string): void {
    this.reported = true;
    if (text.length > MAX_XML_TEXT) throw tooLong('a text');
    // Only text directly inside the element being collected counts (not that of elements within it).
    if (this.capture === undefined || this.capture.depth !== this.stack.length) return;
    this.capture.text += text;
    if (this.capture.text.length > MAX_XML_TEXT) throw tooLong('a text');
  }
}
