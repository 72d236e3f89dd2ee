/// The HTML report's filters, which work without a script (the page's
/// Content-Security-Policy forbids scripts): hidden inputs at the top of the
/// page, their labels in a bar, and CSS rules `#INPUT:checked ~ section ...`
/// that hide what the filter leaves out. Failed only (a checkbox, or the
/// link `#failed`: `:target`, for a URL that opens the page filtered), one
/// guest, one device (radio groups). Filtered things carry `data-g` and
/// `data-d` (the guest's and device's index in the newest report) and
/// `data-ok` when nothing in them failed; indices keep names out of the CSS.
struct Filters {
    /// The newest report's guests and devices, in matrix order.
    let guests: [String]
    let devices: [String]

    init(_ report: TestReport) {
        var guests: [String] = []
        var devices: [String] = []
        for result in report.results {
            if !guests.contains(result.entry.guest) { guests.append(result.entry.guest) }
            if let device = result.entry.device, !devices.contains(device) { devices.append(device) }
        }
        self.guests = guests
        self.devices = devices
    }

    /// ` data-g="1" data-d="2" data-ok` for a matrix or history row or a run of `row`.
    func attributes(_ row: HTMLReport.Row, passed: Bool) -> String {
        var text = ""
        if let g = guests.firstIndex(of: row.guest) { text += " data-g=\"\(g + 1)\"" }
        if let device = row.device, let d = devices.firstIndex(of: device) { text += " data-d=\"\(d + 1)\"" }
        return text + (passed ? " data-ok" : "")
    }

    /// The inputs, first in the body: every section after them is their sibling.
    func inputs(into page: inout HTMLPage) {
        page.raw("<input type=\"checkbox\" class=\"filter\" id=\"only-failed\"><span id=\"failed\"></span>\n")
        for (name, values) in groups {
            page.raw("<input type=\"radio\" class=\"filter\" name=\"\(name)\" id=\"\(name)-all\" checked>")
            for index in values.indices { page.raw("<input type=\"radio\" class=\"filter\" name=\"\(name)\" id=\"\(name)-\(index + 1)\">") }
            page.raw("\n")
        }
    }

    /// The bar of labels that set the inputs.
    func bar(into page: inout HTMLPage) {
        page.raw("<nav class=\"filters\">show: <label for=\"only-failed\">failed only</label>"
            + "<a href=\"#failed\" title=\"a link that opens this page with only what failed\">#failed</a>")
        for (name, values) in groups {
            page.raw(" · \(name): <label for=\"\(name)-all\">all</label>")
            for (index, value) in values.enumerated() { page.raw("<label for=\"\(name)-\(index + 1)\">\(HTMLReport.escape(value))</label>") }
        }
        page.raw("</nav>\n")
    }

    /// A radio group per dimension with more than one value.
    var groups: [(name: String, values: [String])] {
        [("guest", guests), ("device", devices)].filter { $0.values.count > 1 }
    }

    /// The filters' CSS rules.
    var css: String {
        var rules = "#only-failed:checked ~ section [data-ok], #failed:target ~ section [data-ok] { display: none; }\n"
        var selected = ["#only-failed:checked ~ nav label[for=\"only-failed\"]", "#failed:target ~ nav a[href=\"#failed\"]"]
        let attribute = ["guest": "data-g", "device": "data-d"]
        for (name, values) in groups {
            selected.append("#\(name)-all:checked ~ nav label[for=\"\(name)-all\"]")
            for index in values.indices {
                let id = "\(name)-\(index + 1)"
                selected.append("#\(id):checked ~ nav label[for=\"\(id)\"]")
                rules += "#\(id):checked ~ section [\(attribute[name]!)]:not([\(attribute[name]!)=\"\(index + 1)\"]) { display: none; }\n"
            }
        }
        return rules + selected.joined(separator: ", ") + " { background: #1e88e5; color: #fff; }\n"
    }
}
