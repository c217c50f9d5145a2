import Foundation

/// Whether two texts hold the same JSON value, whatever the order of their objects' keys: a
/// watcher's value encoded again in a new Lua state (after a reload) comes out in another key
/// order, and is no change for its clients. Texts of different lengths are taken as different
/// without decoding (the host's encoder writes a value the same way but for key order).
enum SameJSON {
    static func same(_ left: String, _ right: String?) -> Bool {
        guard let right else { return false }
        if left == right { return true }
        // The same value encoded again differs only in key order, never in length.
        guard left.utf8.count == right.utf8.count else { return false }
        let decoder = JSONDecoder()
        guard let a = try? decoder.decode(Value.self, from: Data(left.utf8)),
            let b = try? decoder.decode(Value.self, from: Data(right.utf8))
        else { return false }
        return a == b
    }

    /// A JSON value, with booleans, integers and floats kept apart (`true` is not `1`).
    private indirect enum Value: Decodable, Equatable {
        case null
        case bool(Bool)
        case integer(Int64)
        case number(Double)
        case string(String)
        case array([Value])
        case object([String: Value])

        init(from decoder: any Decoder) throws {
            if var array = try? decoder.unkeyedContainer() {
                var elements: [Value] = []
                while !array.isAtEnd {
                    elements.append(try array.decode(Value.self))
                }
                self = .array(elements)
                return
            }
            if let object = try? decoder.container(keyedBy: Key.self) {
                var fields: [String: Value] = [:]
                for key in object.allKeys {
                    fields[key.stringValue] = try object.decode(Value.self, forKey: key)
                }
                self = .object(fields)
                return
            }
            let single = try decoder.singleValueContainer()
            if single.decodeNil() {
                self = .null
            } else if let bool = try? single.decode(Bool.self) {
                self = .bool(bool)
            } else if let integer = try? single.decode(Int64.self) {
                self = .integer(integer)
            } else if let number = try? single.decode(Double.self) {
                self = .number(number)
            } else {
                self = .string(try single.decode(String.self))
            }
        }

        private struct Key: CodingKey {
            let stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
    }
}
