"""Dask distributed's word count for bench/wordcount.bench.ts: the same documents (a JSON list on stdin),
split into lines, words of 3+ letters counted per line; per-item (every line's counts to the client,
summed there) and fold (partial sums in the workers). Prints one JSON line: seconds of each, the CPU
seconds they took (this process, where the scheduler runs too, and the workers), and totals."""
import json
import re
import resource
import sys
import time
from collections import Counter

import dask.bag as db
from distributed import Client, LocalCluster

WORD = re.compile(r"[A-Za-z]{3,}")


def count_words(line):
    return dict(Counter(WORD.findall(line)))


def add_counts(total, counts):
    for word, n in counts.items():
        total[word] = total.get(word, 0) + n
    return total


def merge(a, b):
    return add_counts(dict(a), b)


def worker_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu(client):
    """CPU seconds used so far by this process (the client and the scheduler) and every worker."""
    return time.process_time() + sum(client.run(worker_cpu).values())


def main():
    documents = json.load(sys.stdin)
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        bag = db.from_sequence(documents, npartitions=workers * 4)
        bag.map(len).sum().compute()  # warm: workers up, code loaded
        cpu_before = cpu(client)
        started = time.perf_counter()
        per_line = bag.map(lambda d: d.split("\n")).flatten().map(count_words).compute()
        totals = {}
        for counts in per_line:
            add_counts(totals, counts)
        per_item = time.perf_counter() - started
        per_item_cpu = cpu(client) - cpu_before
        cpu_before = cpu(client)
        started = time.perf_counter()
        folded = bag.map(lambda d: d.split("\n")).flatten().map(count_words).fold(add_counts, merge).compute()
        fold = time.perf_counter() - started
        fold_cpu = cpu(client) - cpu_before
    print(json.dumps({"perItem": per_item, "fold": fold, "perItemCpu": per_item_cpu, "foldCpu": fold_cpu,
                      "perItemTotals": totals, "foldTotals": folded}))


if __name__ == "__main__":
    main()
