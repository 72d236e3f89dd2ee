/// `STATE/LAB/lab-file.json`: `{"lab_file": PATH}`, the lab file of the
/// last `up`, so that `qlab up NAME` starts the lab again after `down`.
struct LastLabFile: Codable, Sendable {
    var labFile: String

    enum CodingKeys: String, CodingKey {
        case labFile = "lab_file"
    }
}
