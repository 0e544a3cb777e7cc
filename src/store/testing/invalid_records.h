// Every invalid form of every slot attribute, in one list that the codec's own test and
// each adapter's test (SQLite rows, DynamoDB items) run through their store, so that all
// stores are proved to refuse the same values.
#pragma once

#include <string>
#include <vector>

#include "store/record_backend.h"

namespace hsdo::testing {

struct InvalidForm {
  std::string attribute;  // replaced in a valid enabled record (or removed when `remove`)
  AttributeValue value;
  std::string why;  // a word of the expected reason
  bool remove = false;
  // A type mismatch SQLite's column affinity converts losslessly on insert (the text '5'
  // in an INTEGER column is stored as 5): invalid only in stores that keep types.
  bool converted_by_sqlite = false;
};

inline std::vector<InvalidForm> InvalidForms() {
  using V = AttributeValue;
  const V::Type n = V::Type::kNumber;
  const V::Type s = V::Type::kString;
  return {
      {"BackendServerStatus", V{s, "maybe"}, "BackendServerStatus"},
      {"BackendServerStatus", V{s, "Enabled"}, "BackendServerStatus"},
      {"BackendServerStatus", V{n, "1"}, "BackendServerStatus"},
      {"BackendServerStatus", V{}, "BackendServerStatus", /*remove=*/true},
      {"IPAddress", V{s, "1.2.3.4; shutdown sessions server be/srv1"}, "IPAddress"},
      {"IPAddress", V{s, "not-an-ip"}, "IPAddress"},
      {"IPAddress", V{s, "10.0.0.4\nset server be/srv1 state maint"}, "IPAddress"},
      {"IPAddress", V{s, ""}, "IPAddress"},
      {"IPAddress", V{s, "0.0.0.0"}, "IPAddress"},  // HAProxy would connect to itself
      {"IPAddress", V{s, "::"}, "IPAddress"},
      {"IPAddress", V{n, "5"}, "IPAddress"},
      {"IPAddress", V{}, "IPAddress", /*remove=*/true},
      {"Weight", V{s, "abc"}, "Weight"},
      {"Weight", V{s, "5"}, "Weight", false, /*converted_by_sqlite=*/true},
      {"Weight", V{n, "300"}, "Weight"},
      {"Weight", V{n, "-1"}, "Weight"},
      {"Weight", V{n, "5.5"}, "Weight"},
      {"Weight", V{V::Type::kOther, ""}, "Weight"},
      {"Weight", V{}, "Weight", /*remove=*/true},
      {"Port", V{s, "80;shutdown"}, "Port"},
      {"Port", V{s, "80"}, "Port", false, true},
      {"Port", V{n, "0"}, "Port"},
      {"Port", V{n, "70000"}, "Port"},
      {"LastWeightUpdate", V{s, "2024-01-01\n00:00:00"}, "LastWeightUpdate"},
      {"LastWeightUpdate", V{n, "5"}, "LastWeightUpdate", false, true},
  };
}

}  // namespace hsdo::testing
