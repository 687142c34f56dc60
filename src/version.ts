import pkg from "../package.json" with { type: "json" };

/** This pcluster's version, as in package.json. */
export const VERSION: string = pkg.version;
