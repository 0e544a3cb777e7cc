// Node reports (issue 10): each agent writes what it has applied to its HAProxy and the sessions
// of its draining slots; the orchestrator reads them to free drained slots and to see which nodes
// are behind. Kept apart from the slot records (a Python agent never sees them).
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "core/slot_table.h"

namespace hsdo {

// Where an agent writes its node's report (one record per node name, overwritten). A report
// that cannot be stored is logged and counted here (NodeRecordLog), not by the caller.
class NodeReportSink {
 public:
  virtual ~NodeReportSink() = default;
  virtual Result<void> Report(const NodeReport& report) = 0;
  // For an agent woken because its store changed: false only when the sink can tell that
  // nothing but its own reports was written to the store since the last call (an SQLite
  // store keeps the reports in the file the agent watches). May be called from another thread.
  virtual bool OthersMayHaveWritten() { return true; }
};

// Where the orchestrator and `hsdo status --fleet` read every node's last report.
class NodeReportReader {
 public:
  virtual ~NodeReportReader() = default;
  virtual Result<std::vector<NodeReport>> ReadNodeReports() = 0;
  // Deletes `name`'s record if it still holds the report its node wrote at `reported_at` (the
  // node has not reported since): true when deleted, false when the record changed or is gone.
  // The orchestrator's expiry of nodes silent for NODE_RECORD_EXPIRY (a node that reports
  // again writes its whole record anew).
  virtual Result<bool> DeleteNodeReport(const std::string& name, WallTime reported_at) = 0;
};

}  // namespace hsdo
