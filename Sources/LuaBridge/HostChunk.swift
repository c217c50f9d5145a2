import CLua

/// The host's own Lua chunks, as opposed to script files: an error located in one says nothing to
/// a script author, so the script frame that called into it is blamed instead.
public enum HostChunk {
    /// The prelude's chunk name; errors inside it read `moongate/prelude.lua:LINE: ...`.
    public static let prelude = MOONGATE_PRELUDE_CHUNK

    /// `shortSource` as Lua reports it (`short_src`, or the location of an error message).
    public static func contains(_ shortSource: String) -> Bool {
        shortSource.withCString { moongate_is_host_chunk($0) != 0 }
    }
}
