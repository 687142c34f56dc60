import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { Root } from "../../src/index.ts";
import type { TaskStats } from "../../src/protocol/pipeline.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type Chromium, chromiumMissing, launchChromium } from "../support/chromium.ts";
import { CLI, REPO, killAll, spawnBun } from "../support/processes.ts";
import { waitUntil } from "../support/wait.ts";

const TASKS = join(REPO, "test/fixtures/tasks");
const ARTIFACTS = join(REPO, "test-artifacts");
const ITEMS = 800;

if (chromiumMissing !== undefined) console.warn(`dashboard browser tests skipped: ${chromiumMissing}`);

let cluster: Root;
let browser: Chromium | undefined;

beforeAll(async () => {
  delete process.env.PCLUSTER_TOKEN;
  cluster = await Root.local({ nodes: 2, workers: 1 });
  if (chromiumMissing === undefined) browser = await launchChromium();
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.close();
  await killAll();
});

/** The little of the DOM the page reading below uses (this project's tsc has no DOM library). */
interface PageElement {
  dataset: Record<string, string | undefined>;
  textContent: string | null;
  querySelector(selector: string): PageElement | null;
}
declare const document: {
  body: PageElement;
  getElementById(id: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
};

/** What the page shows now, read from the exact values it keeps beside the text. */
async function readPage(page: Page) {
  return page.evaluate(() => {
    const number = (element: PageElement | null) => Number(element?.dataset.value ?? Number.NaN);
    const field = (row: PageElement, name: string) => number(row.querySelector(`[data-field="${name}"]`));
    return {
      updated: Number(document.body.dataset.updated ?? 0),
      done: number(document.getElementById("done")),
      inFlight: number(document.getElementById("in-flight")),
      errorsTotal: number(document.getElementById("errors-total")),
      percent: document.getElementById("percent")!.textContent,
      eta: document.getElementById("eta")!.textContent,
      pipeline: document.getElementById("pipeline")!.textContent,
      state: document.getElementById("state")!.textContent,
      tasks: [...document.querySelectorAll("#tasks tr[data-task]")].map((row) => ({
        task: row.dataset.task,
        processed: field(row, "processed"),
        dropped: field(row, "dropped"),
        errors: field(row, "errors"),
        mean: field(row, "mean"),
        p99: field(row, "p99"),
      })),
      nodes: [...document.querySelectorAll("#nodes tr[data-node]")].map((row) => row.dataset.node),
      lags: [...document.querySelectorAll("#nodes tr[data-node]")].map(
        (row) => row.querySelector('[data-field="lag"]')?.textContent,
      ),
      errors: [...document.querySelectorAll("#errors li")].map((item) => ({
        where: item.querySelector(".where")?.textContent,
        node: item.querySelector(".node")?.textContent,
        what: item.querySelector(".what")?.textContent,
      })),
    };
  });
}

type PageView = Awaited<ReturnType<typeof readPage>>;

/** The page's per-task counts are exactly the cluster's merged stats. */
function matchesStats(view: PageView, stats: TaskStats[]): boolean {
  return (
    view.tasks.length === stats.length &&
    stats.every((task, index) => {
      const shown = view.tasks[index]!;
      return (
        shown.task === task.task &&
        shown.processed === task.processed &&
        shown.dropped === task.dropped &&
        shown.errors === task.errors
      );
    })
  );
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  console.log(`dashboard screenshot: ${path}`);
}

describe.skipIf(chromiumMissing !== undefined)("the dashboard in a real headless Chromium", () => {
  test("cluster.serveDashboard: the numbers move during a run and end equal to stats()", async () => {
    await cluster.setup("dashboard-demo", "1.0", [{ function: tasks.blockOrFail }, { function: tasks.identity }], {
      localPackages: [TASKS],
      errorHandler: () => {},
    });
    const dashboard = cluster.serveDashboard({ intervalMs: 250 });
    expect(dashboard.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await browser!.context.newPage();
    await page.goto(dashboard.url, { timeout: 30_000 });
    await waitUntil(
      "a first snapshot on the page",
      () => readPage(page),
      (view) => view.updated > 0,
      30_000,
    );

    const running = cluster.run(Array.from({ length: ITEMS }, (_, id) => ({ ms: 5, id })));
    const first = await waitUntil(
      "items processed on the page while the run goes on",
      () => readPage(page),
      (view) => (view.tasks[0]?.processed ?? 0) > 0 && view.done < ITEMS,
      30_000,
    );
    expect(first.pipeline).toBe("dashboard-demo 1.0");
    expect(first.nodes.sort()).toEqual([...cluster.nodes].sort());
    for (const lag of first.lags) expect(lag).toMatch(/^\d+(\.\d+)? ms$/); // each node's thread lag
    const second = await waitUntil(
      "the processed count to grow on the page",
      () => readPage(page),
      (view) => view.tasks[0]!.processed > first.tasks[0]!.processed,
      30_000,
    );
    expect(second.done).toBeGreaterThanOrEqual(first.done);
    await screenshot(page, "dashboard-running.png");

    await running;
    const stats = await cluster.stats();
    const final = await waitUntil(
      "the page to show the final counts of stats()",
      () => readPage(page),
      (view) => matchesStats(view, stats) && view.done === ITEMS,
    );
    expect(final.inFlight).toBe(0);
    expect(final.errorsTotal).toBe(ITEMS / 10);
    expect(final.percent).toBe("100.0%");
    expect(final.eta).toBe("done");
    // Every call of the blocking task takes 5 ms or more: its mean and p99 say so.
    expect(final.tasks[0]!.mean).toBeGreaterThanOrEqual(5);
    expect(final.tasks[0]!.p99).toBeGreaterThanOrEqual(5);
    expect(final.tasks[0]!.p99).toBeGreaterThanOrEqual(final.tasks[1]!.p99);
    expect(final.errors.length).toBeGreaterThan(0);
    expect(final.errors[0]!.where).toMatch(/^blockOrFail · item \d+$/);
    expect(cluster.nodes).toContain(final.errors[0]!.node!);
    expect(final.errors[0]!.what).toMatch(/^item \d+ is a multiple of ten$/);
    await screenshot(page, "dashboard.png");

    // The snapshot is also there as JSON, and the whole thing stops on reset.
    const snapshot = (await (await fetch(`${dashboard.url}snapshot.json`)).json()) as {
      mode: string;
      tasks: unknown[];
    };
    expect(snapshot.mode).toBe("root");
    expect(snapshot.tasks).toHaveLength(2);
    await page.close();
  }, 120_000);

  test("pcluster dashboard --nodes: the same figures from the nodes alone, an unreachable node named", async () => {
    const [a, b] = cluster.nodes;
    const nowhere = "127.0.0.1:1"; // nothing listens on port 1 of loopback
    const cli = spawnBun([CLI, "dashboard", "--nodes", `${a},${b},${nowhere}`, "--port", "0", "--interval", "250"], {
      env: { PCLUSTER_TOKEN: undefined },
    });
    let page: Page | undefined;
    try {
      const [, url] = await cli.waitFor(/pcluster dashboard on (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);
      page = await browser!.context.newPage();
      await page.goto(url!, { timeout: 30_000 });
      const stats = await cluster.stats();
      const view = await waitUntil(
        "the nodes' counts on the page",
        () => readPage(page!),
        (shown) => matchesStats(shown, stats),
        30_000,
      );
      expect(view.state).toContain("nodes");
      expect(view.done).toBe(ITEMS); // summed over the nodes: each counts the items it finished
      expect(view.nodes).toEqual([a, b, nowhere]);
      const unreachable = await page.textContent(`#nodes tr[data-node="${nowhere}"]`);
      expect(unreachable).toContain("unreachable");
      expect(view.errors.length).toBeGreaterThan(0);
      expect(
        view.errors.every((error) => error.what?.endsWith("is a multiple of ten") && [a, b].includes(error.node!)),
      ).toBe(true);
      await screenshot(page, "dashboard-nodes.png");
    } finally {
      await page?.close();
      cli.kill("SIGTERM");
      expect(await cli.waitExit(10_000)).toBe(0);
    }
  }, 90_000);
});

test("reset() stops the root's dashboard", async () => {
  const dashboard = cluster.serveDashboard({});
  expect((await fetch(dashboard.url)).status).toBe(200);
  await cluster.reset();
  await expect(fetch(dashboard.url, { signal: AbortSignal.timeout(3000) })).rejects.toThrow();
}, 30_000);
