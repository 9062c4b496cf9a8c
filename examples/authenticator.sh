#!/bin/sh
# A sample external authenticator for examples/external.toml (POSIX sh).
# stdin:  _SOURCE_CRED (password, or md5 response) and _SOURCE_SALT (hex; 00000000 for
#         cleartext), then the client's startup parameters, one key=value per line. Client
#         parameters never have names starting with _ (pgbastion leaves those out).
# stdout: the backend's startup parameters, _META_TARGET_HOST=host:port and
#         _META_TARGET_CRED (a password, or an md5 hash "md5" + md5(password + user)).
# exit 0 to accept, anything else to refuse.
while IFS='=' read -r key value; do
    case "$key" in
        user) user=$value ;;
        database) database=$value ;;
        _SOURCE_CRED) cred=$value ;;
    esac
done
# Replace this check with a call to your identity system.
[ "$user" = "alice" ] && [ "$cred" = "wonderland" ] || exit 1
echo "user=app_$user"
echo "database=${database:-postgres}"
echo "application_name=via pgbastion for $user"
echo "_META_TARGET_HOST=127.0.0.1:5432"
echo "_META_TARGET_CRED=${APP_PW:-}"
