/**
 * tools/test.ts (`deno task test`): it forgives only an abort after a clean JUnit report, and keeps every
 * other failure's exit code. A stand-in for `deno` (a shell script) writes the report and ends as told.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { junitCounts, passed, runTests } from "../tools/test.ts";

const report = (tests: number, failures: number, errors: number) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="deno test" tests="${tests}" failures="${failures}" ` +
  `errors="${errors}" time="0.350">\n    <testsuite name="./x_test.ts" tests="${tests}" disabled="0" ` +
  `errors="9" failures="9">\n    </testsuite>\n</testsuites>\n`;

Deno.test("junitCounts reads the root element's counts, not a suite's; null without all three", () => {
  assertEquals(junitCounts(report(215, 0, 0)), { tests: 215, failures: 0, errors: 0 });
  assertEquals(junitCounts(report(7, 2, 1)), { tests: 7, failures: 2, errors: 1 });
  assertEquals(junitCounts('<testsuite tests="3" failures="0" errors="0">'), null);
  assertEquals(junitCounts('<testsuites tests="3" failures="0">'), null);
  assertEquals(junitCounts(""), null);
});

Deno.test("passed: exit 0, or SIGABRT after a report with tests and no failure or error; nothing else", () => {
  const clean = { tests: 215, failures: 0, errors: 0 };
  assert(passed(0, null, null));
  assert(passed(134, "SIGABRT", clean));
  assert(passed(134, null, clean)); // a shell that reports the signal as 128 + 6
  assert(!passed(134, "SIGABRT", null));
  assert(!passed(134, "SIGABRT", { ...clean, failures: 1 }));
  assert(!passed(134, "SIGABRT", { ...clean, errors: 1 }));
  assert(!passed(134, "SIGABRT", { ...clean, tests: 0 }));
  assert(!passed(1, null, clean)); // a failed run is never forgiven, whatever its report says
  assert(!passed(139, "SIGSEGV", clean));
});

/** A stand-in for `deno test`: writes `xml` (if any) to the --junit-path it is given, then runs `end`. */
async function fakeDeno(dir: string, xml: string | null, end: string): Promise<string> {
  const path = `${dir}/deno`;
  const write = xml === null ? "" : `printf '%s' '${xml.replaceAll("'", "")}' > "\${j#--junit-path=}"`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nfor j in "$@"; do case "$j" in --junit-path=*) ${write};; esac; done\n${end}\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("runTests: the task's exit code for each way the test process can end", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const abort = "kill -ABRT $$";
    const cases: [string | null, string, number][] = [
      [report(5, 0, 0), "exit 0", 0],
      [report(5, 0, 0), abort, 0], // the known abort after a clean report
      [report(5, 1, 0), abort, 134],
      [report(5, 0, 1), abort, 134],
      [null, abort, 134], // died before its report
      [report(5, 1, 0), "exit 1", 1],
      [report(5, 0, 0), "exit 3", 3],
      [report(5, 0, 0), "kill -SEGV $$", 139],
    ];
    for (const [xml, end, want] of cases) {
      const got = await runTests(["tests/"], await fakeDeno(dir, xml, end));
      assertEquals(got, want, `${end} after ${xml === null ? "no report" : junitCounts(xml!)?.failures} `);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
