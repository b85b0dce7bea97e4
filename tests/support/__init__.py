"""What the unit and e2e tests share: the fake Discord, fake providers, factories and helpers. Test modules
import from here, never from each other; bench/ imports only from here."""
