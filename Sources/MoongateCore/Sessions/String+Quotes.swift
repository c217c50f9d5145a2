extension String {
    /// `"abc"` becomes `abc`; anything else is returned as it is.
    var trimmingQuotes: String {
        guard self.count >= 2, self.first == "\"", self.last == "\"" else { return self }
        return String(self.dropFirst().dropLast())
    }
}
