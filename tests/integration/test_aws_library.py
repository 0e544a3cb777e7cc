"""The AWS layer (src/aws) against the emulator: runs the C++ MotoTest cases of aws_test
with HSDO_TEST_AWS_ENDPOINT pointing at a fresh moto, then checks, as the original Python
client would read them, every table those cases wrote."""
import re
import subprocess

from aws_fixtures import SEED_ATTRIBUTES, moto, seed_client_view  # noqa: F401 (fixture)
from conftest import BUILD

AWS_TEST = BUILD / "src" / "aws" / "aws_test"


def test_aws_layer_against_moto(moto):
    assert AWS_TEST.exists(), f"{AWS_TEST} not built"
    env = dict(moto.env)
    env["HSDO_TEST_AWS_ENDPOINT"] = moto.url
    result = subprocess.run([str(AWS_TEST), "--gtest_filter=MotoTest.*", "--gtest_brief=1"],
                            env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SKIPPED" not in output, output
    # Every MotoTest case ran and passed (a count that grows with the suite, never filtered).
    ran = re.search(r"\[==========\] (\d+) tests? from", output)
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", output)
    assert ran and passed and ran.group(1) == passed.group(1), output
    listed = subprocess.run([str(AWS_TEST), "--gtest_filter=MotoTest.*", "--gtest_list_tests"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    cases = [line for line in listed.splitlines() if line.startswith("  ")]
    assert int(passed.group(1)) == len(cases) > 0, (cases, output)
    # The fake secret never appears in anything the library logged.
    assert moto.env["AWS_SECRET_ACCESS_KEY"] not in output

    # Every table hsdo wrote stays readable by the seed's clients.
    dynamodb = moto.client("dynamodb")
    # (<table>-nodes holds node records, which the seed's clients never read.)
    tables = [t for t in dynamodb.list_tables()["TableNames"]
              if t.startswith("hsdo-table-") and not t.endswith("-nodes")]
    assert len(tables) >= 4
    for table in tables:
        view = seed_client_view(moto, table)
        assert view, table
        for slot, (ip, name, asg, weight, status, last) in view.items():
            assert status in ("enabled", "disabled")
            if status == "disabled":
                assert (ip, name, asg, weight, last) == (
                    "none", "none", "none", 0, "0-0-0 00:00:00.000000"), (table, slot)
            else:
                assert ip != "none" and weight > 0 and len(last) == 26, (table, slot)
        # The generation lives on item 1, as an extra attribute those clients ignore.
        item1 = dynamodb.get_item(TableName=table, Key={"BackendServerID": {"N": "1"}})
        assert all(a in item1["Item"] for a in SEED_ATTRIBUTES)
