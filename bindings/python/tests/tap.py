"""Run the binding's unittest suite and report it as TAP.

    python3 tests/tap.py [-v] [PATTERN...]

Prints "1..N" first, then one line per test case: "ok N - name",
"not ok N - name" (followed by the traceback as "# " comments), or
"ok N - name # SKIP reason".  When the whole suite cannot run (libkaio
cannot be loaded, or no directory accepts O_DIRECT) it prints
"1..0 # SKIP reason" and exits 77.  Exit status: 0 all passed (or some
skipped), 1 a failure or error, 77 everything skipped.  PATTERNs keep only
the tests whose id contains one of them.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


class TapResult(unittest.TestResult):
    def __init__(self, stream, verbose=False):
        super().__init__()
        self.stream = stream
        self.verbose = verbose
        self.n = 0
        self.n_pass = self.n_fail = self.n_skip = 0
        self._t0 = None

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def _name(test):
        # "TestAsync.test_every_coroutine"
        return "%s.%s" % (type(test).__name__, getattr(test, "_testMethodName", str(test)))

    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.monotonic()

    def _comment(self, text):
        for line in text.rstrip("\n").splitlines():
            self._line("# " + line)

    def _timing(self):
        return " (%.2fs)" % (time.monotonic() - self._t0) if self.verbose and self._t0 else ""

    def addSuccess(self, test):
        super().addSuccess(test)
        self.n += 1
        self.n_pass += 1
        self._line("ok %d - %s%s" % (self.n, self._name(test), self._timing()))

    def _fail(self, test, err, kind):
        self.n += 1
        self.n_fail += 1
        self._line("not ok %d - %s%s" % (self.n, self._name(test), self._timing()))
        self._comment("%s: %s" % (kind, self._exc_info_to_string(err, test)))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err, "FAIL")

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err, "ERROR")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.n += 1
        self.n_skip += 1
        self._line("ok %d - %s # SKIP %s" % (self.n, self._name(test), " ".join(reason.split())))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.n += 1
        self.n_pass += 1
        self._line("ok %d - %s # TODO expected failure" % (self.n, self._name(test)))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.n += 1
        self.n_fail += 1
        self._line("not ok %d - %s # unexpected success" % (self.n, self._name(test)))


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main(argv):
    verbose = "-v" in argv
    patterns = [a for a in argv if a != "-v"]
    import test_kaio

    if test_kaio.SKIP_REASON:
        print("1..0 # SKIP %s" % test_kaio.SKIP_REASON)
        return 77
    loader = unittest.TestLoader()
    tests = list(_flatten(loader.loadTestsFromModule(test_kaio)))
    if patterns:
        tests = [t for t in tests if any(p in t.id() for p in patterns)]
    suite = unittest.TestSuite(tests)
    print("1..%d" % suite.countTestCases(), flush=True)
    print("# libkaio %s from %s; Python %s (%s); files under %s" % (
        test_kaio.kaio.version(), test_kaio.kaio.library_path(), sys.version.split()[0],
        sys.executable, test_kaio.BASE_DIR), flush=True)
    result = TapResult(sys.stdout, verbose)
    t0 = time.monotonic()
    suite.run(result)
    print("# %d passed, %d failed, %d skipped in %.1f s" % (
        result.n_pass, result.n_fail, result.n_skip, time.monotonic() - t0))
    if result.n_fail:
        return 1
    if result.n_pass == 0 and result.n_skip:
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
