"""Dask distributed's word count for bench/wordcount.bench.ts: the same documents (a JSON list on stdin),
split into lines, words of 3+ letters counted per line; per-item (every line's counts to the client,
summed there) and fold (partial sums in the workers). Prints one JSON line: seconds of each and totals."""
import json
import re
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


def main():
    documents = json.load(sys.stdin)
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        bag = db.from_sequence(documents, npartitions=workers * 4)
        bag.map(len).sum().compute()  # warm: workers up, code loaded
        started = time.perf_counter()
        per_line = bag.map(lambda d: d.split("\n")).flatten().map(count_words).compute()
        totals = {}
        for counts in per_line:
            add_counts(totals, counts)
        per_item = time.perf_counter() - started
        started = time.perf_counter()
        folded = bag.map(lambda d: d.split("\n")).flatten().map(count_words).fold(add_counts, merge).compute()
        fold = time.perf_counter() - started
    print(json.dumps({"perItem": per_item, "fold": fold, "perItemTotals": totals, "foldTotals": folded}))


if __name__ == "__main__":
    main()
