import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { join } from "node:path";

/**
 * The machine's license and copyright texts (/usr/share/common-licenses and /usr/share/doc/<pkg>/
 * copyright), each file once (many copyright files are links to one another), read as latin1: about
 * 900 documents of 20 MB on Debian, from a few hundred bytes to 2 MB.
 */
export function documents(): string[] {
  const paths = new Set<string>();
  const add = (path: string) => {
    try {
      if (statSync(path).isFile()) paths.add(realpathSync(path));
    } catch {
      // a dangling link: not a document
    }
  };
  const licenses = "/usr/share/common-licenses";
  if (existsSync(licenses)) for (const name of readdirSync(licenses)) add(join(licenses, name));
  const docs = "/usr/share/doc";
  if (existsSync(docs)) for (const name of readdirSync(docs)) add(join(docs, name, "copyright"));
  return [...paths].sort().map((path) => readFileSync(path, "latin1"));
}
